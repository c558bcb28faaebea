"""The front's whole-request deadline (``FrontLimits.request_timeout_s``, ``--request-timeout``): a client that
sends its request a byte at a time (slowloris) or never finishes its body gets 408 and is disconnected within the
deadline, whatever the idle timeout, so it cannot hold a connection slot; time the server spends (waiting for room,
computing) never counts against the client. A stand-in model replaces Triton, so the tests take seconds."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time

import numpy as np
import pytest

from tests.serving.helpers import StubModel, binary_request, front_starter, post

DEADLINE = 0.5
IDLE = 30.0  # far above the deadline: whatever closes a slow client here is the deadline, not the idle timeout
INFER = "/v2/models/banet/infer"


@pytest.fixture
def front_on():
    """start(delay=..., **limits) -> (front, stub model); everything stopped afterwards."""
    with front_starter(StubModel, request_timeout_s=DEADLINE, idle_timeout_s=IDLE) as start:
        yield lambda delay=0.0, **limits: start({"delay": delay}, **limits)


def _image(side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)


class _Trickler:
    """A slow client: sends ``first`` at once, then ``data`` ``step`` bytes every ``pause`` seconds in a thread
    until it is done, the server hangs up or :meth:`stop`; then reads what the server answered (b"" if it closed
    without a word)."""

    def __init__(self, port: int, data: bytes, step: int = 1, pause: float = 0.05, first: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(first)
        self.data, self.step, self.pause = data, step, pause
        self.started = time.monotonic()
        self._stop = threading.Event()
        self.answer: bytes | None = None
        self.answered_after: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for at in range(0, len(self.data), self.step):
            if self._stop.wait(self.pause) or select.select([self.sock], [], [], 0)[0]:
                break  # stopped, or the server answered (or hung up): stop sending, read its answer
            try:
                self.sock.sendall(self.data[at:at + self.step])
            except OSError:  # the server hung up
                break
        answer = b""
        try:
            while chunk := self.sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        self.answer, self.answered_after = answer, time.monotonic() - self.started

    def stop(self) -> None:
        self._stop.set()

    def result(self, timeout: float = 10.0) -> tuple[bytes, float]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the server still holds the slow connection"
        self.sock.close()
        return self.answer, self.answered_after


def _status_and_error(answer: bytes) -> tuple[int, str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"], head


def _assert_408_at_the_deadline(trickler: _Trickler) -> str:
    answer, after = trickler.result()
    trickler.stop()
    status, message, head = _status_and_error(answer)
    assert status == 408, answer
    assert b"Connection: close" in head
    assert f"within {DEADLINE:g} s" in message and "--request-timeout" in message, message
    assert DEADLINE * 0.8 <= after < DEADLINE + 3, after  # the deadline, not the 30 s idle timeout
    return message


def test_headers_sent_a_byte_at_a_time_get_408_at_the_deadline(front_on):
    front, model = front_on()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 500}\r\n\r\n".encode()
    _assert_408_at_the_deadline(_Trickler(front.port, head))  # 500+ bytes at 20/s would take 27 s
    assert model.seen == []


@pytest.mark.parametrize("how", ["sent slowly", "never finished"])
def test_a_slow_or_unfinished_body_gets_408_and_never_reaches_the_model(front_on, how):
    front, model = front_on()
    body, headers = binary_request(_image())
    head = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    if how == "sent slowly":  # the headers at once, then 8 body bytes every 50 ms (the whole body: over 2 s)
        trickler = _Trickler(front.port, body, step=8, first=head)
    else:  # the headers and half the body, then silence
        trickler = _Trickler(front.port, b"", first=head + body[:len(body) // 2])
    _assert_408_at_the_deadline(trickler)
    assert model.seen == []


def test_a_silent_connection_is_closed_at_the_deadline_without_an_answer(front_on):
    front, _ = front_on()
    trickler = _Trickler(front.port, b"")
    answer, after = trickler.result()
    assert answer == b"" and DEADLINE * 0.8 <= after < DEADLINE + 3, (answer, after)


def test_slow_clients_lose_their_connection_slots_at_the_deadline(front_on):
    """Two slowloris connections fill a two-connection front; others are refused (503) until the deadline frees
    both slots. Before the deadline, each trickled byte reset the idle timeout: the slots stayed taken for good."""
    front, _ = front_on(max_connections=2)
    head = f"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 500}\r\n\r\n".encode()
    slow = [_Trickler(front.port, head) for _ in range(2)]
    time.sleep(0.1)
    assert post(front.port, None, path="/v2/health/live", method="GET", timeout=5)[0] == 503
    for trickler in slow:
        _assert_408_at_the_deadline(trickler)
    assert post(front.port, None, path="/v2/health/live", method="GET", timeout=5)[0] == 200


def test_time_on_the_model_and_between_requests_does_not_count(front_on):
    """The model takes twice the deadline; a kept-alive connection then stays silent longer than the deadline
    (within the idle timeout) before its next request: both requests are answered."""
    front, model = front_on(delay=2 * DEADLINE)
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        for pause in (0.0, 1.5 * DEADLINE):
            time.sleep(pause)
            conn.request("POST", INFER, *binary_request(_image()))
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
    finally:
        conn.close()
    assert [path for _, path in model.seen] == [INFER, INFER]


def test_waiting_for_room_in_the_byte_budget_does_not_count(front_on):
    """Room for one body at a time: the second request waits for the first (on the model for 2 deadlines) before
    the front reads its body, which is larger than one read-ahead buffer. That wait is the server's, so the
    second request is answered, not refused with 408."""
    body, headers = binary_request(_image(side=128))  # 48 KiB of pixels
    front, model = front_on(delay=2 * DEADLINE, max_inflight_bytes=len(body), max_body_bytes=len(body))
    results: list = []
    first = threading.Thread(target=lambda: results.append(post(front.port, body, headers, timeout=10)))
    first.start()
    deadline = time.monotonic() + 5
    while not model.seen:  # the first request is on the model, holding the byte budget
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = post(front.port, body, headers, timeout=10)
    first.join(10)
    assert [status for status, *_ in results] == [200]
    assert second[0] == 200, second[1]
    assert len(model.seen) == 2


def test_serve_takes_request_timeout_from_its_command_line(capsys):
    from serving.serve import _config, _parser

    config = _config(_parser().parse_args(["--request-timeout", "0.5"]), None)
    assert config.limits().request_timeout_s == 0.5
    assert _config(_parser().parse_args([]), None).limits().request_timeout_s == 60.0
    for bad in ("0", "-1", "inf", "nan", "x"):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(["--request-timeout", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--request-timeout" in err, err


def test_triton_server_takes_request_timeout_from_its_command_line(capsys, tmp_path, monkeypatch):
    import serving.triton_server as triton_server

    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(SystemExit) as exited:  # the parser serving.serve uses: one line, exit code 2
            triton_server.main([str(tmp_path), "--request-timeout", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argument --request-timeout") and err.count("\n") == 1, err

    passed = {}

    def fake_start(*args, **kwargs):
        passed.update(kwargs)
        raise triton_server.TritonLaunchError("stop here")

    monkeypatch.setattr(triton_server, "start", fake_start)
    assert triton_server.main([str(tmp_path), "--request-timeout", "7.5"]) == 1
    assert passed["request_timeout_s"] == 7.5
