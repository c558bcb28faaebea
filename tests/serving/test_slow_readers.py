"""The front's whole-response deadline (``FrontLimits.response_timeout_s``, ``--response-timeout``): a client that
asks for a large answer and then reads it slowly, or not at all (a tiny TCP receive window), loses its connection
within the deadline, so it cannot hold a connection slot; one line is logged. A stand-in model answers every
inference with a large body (a deblurred 4000x3000 photo is 36 MB), so the tests take seconds."""

from __future__ import annotations

import http.client
import logging
import socket
import time

import numpy as np
import pytest

from serving.front import DeadlineWriter, ResponseDeadline
from tests.serving.helpers import StubModel, binary_request, front_starter, post

DEADLINE = 0.5
IDLE = 30.0  # far above the deadline: whatever frees a slow reader's slot here is the deadline, not the idle timeout
BIG = 24 << 20  # well over what the kernel buffers on loopback (server send buffer + a tiny client window)
INFER = "/v2/models/banet/infer"


class _BigAnswerModel(StubModel):
    """The stand-in model, answering each inference with ``size`` bytes (seeded, so a reader can check them)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.answer = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
        handler = self.server.RequestHandlerClass
        model = self

        def do_post(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with model.lock:
                model.seen.append((self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(model.answer)))
            self.end_headers()
            self.wfile.write(model.answer)

        handler.do_POST = do_post


@pytest.fixture
def front_on():
    """start(**limits) -> (front, model); everything stopped afterwards."""
    with front_starter(_BigAnswerModel, response_timeout_s=DEADLINE, idle_timeout_s=IDLE,
                       request_timeout_s=10.0) as start:
        yield lambda **limits: start({"size": BIG}, **limits)


def _request() -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    body, headers = binary_request(image)
    head = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    return head + body


def _non_reader(port: int) -> socket.socket:
    """A client with a tiny receive window that sends one inference request and never reads the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window is agreed then
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(_request())
    return sock


def _wait_until(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.02)
    return time.monotonic() - started


def _live(port: int) -> int:
    return post(port, None, path="/v2/health/live", method="GET", timeout=5)[0]


def _reset_or_closed(sock: socket.socket) -> bool:
    """Drain what arrived; True once the server has reset or closed the connection."""
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except (TimeoutError, BlockingIOError):
        return False
    return True


def test_a_client_that_never_reads_its_answer_loses_its_slot_at_the_deadline(front_on, caplog):
    """Two non-readers fill a two-connection front; others are refused (503) until the response deadline frees both
    slots. Before the deadline, a write waited up to the idle timeout (60 s by default) per call, headers and body
    apart, and the slots stayed taken all that while."""
    front, model = front_on(max_connections=2)
    caplog.set_level(logging.INFO, logger="serving.front")
    started = time.monotonic()
    slow = [_non_reader(front.port) for _ in range(2)]
    _wait_until(lambda: len(model.seen) == 2, 5, "the requests did not reach the model")
    assert _live(front.port) == 503  # both slots held by clients that do not read

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "--response-timeout" in r.getMessage()]

    _wait_until(lambda: len(logged()) == 2, DEADLINE + 4, "the slow readers were not cut at the response deadline")
    assert time.monotonic() - started >= DEADLINE * 0.8
    _wait_until(lambda: _live(front.port) == 200, 2, "the slots were not freed")
    kept = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)  # holds one slot (kept alive) ...
    try:
        kept.request("GET", "/v2/health/live")
        assert kept.getresponse().status == 200
        assert _live(front.port) == 200  # ... and the other is free too
    finally:
        kept.close()
    lines = logged()
    assert len(lines) == 2, lines
    assert f"not read whole within {DEADLINE:g} s" in lines[0] and f"{BIG}-byte body" in lines[0], lines
    for sock in slow:  # the connections were reset: the client learns its answer is gone, nothing stays queued
        sock.settimeout(0.5)
        assert _reset_or_closed(sock)
        sock.close()


def test_other_clients_are_served_while_a_non_reader_waits_out_its_deadline(front_on):
    """One slot held by a non-reader, the other free: a client fetching the same large answer at full speed gets it
    whole, within the same deadline."""
    front, model = front_on(max_connections=2)
    slow = _non_reader(front.port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
        image = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
        conn.request("POST", INFER, *binary_request(image))
        response = conn.getresponse()
        assert response.status == 200
        data = response.read()
        conn.close()
        assert data == model.answer
    finally:
        slow.close()


def test_a_slow_but_steady_reader_is_cut_at_the_deadline_not_per_write(front_on):
    """A client that reads what has arrived every 20 ms (a few KB through its tiny window: the 24 MiB answer would
    take minutes) lets every send make progress, so no per-send timeout fires; the whole-response deadline ends it.
    Before, only the idle timeout (here 30 s) bounded the body's one write."""
    front, _ = front_on()
    sock = _non_reader(front.port)
    got, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 6:
            try:
                chunk = sock.recv(32 * 1024)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert 0 < got < BIG and elapsed < DEADLINE + 3, (got, elapsed)


def test_the_writer_counts_one_deadline_for_all_writes_of_a_response():
    """Unit: the clock starts at start(), not at each write; after stop() only the idle timeout applies."""
    now = [0.0]
    left, right = socket.socketpair()
    try:
        writer = DeadlineWriter(left, idle_s=30.0, response_s=1.0, clock=lambda: now[0])
        writer.start()
        assert writer.write(b"head") == 4
        now[0] = 1.5  # the response's second write comes after its deadline
        with pytest.raises(ResponseDeadline):
            writer.write(b"body")
        assert writer.expired and writer.sent == 4
        writer.stop()
        assert writer.write(b"later") == 5  # no response running: no deadline
        assert right.recv(16) == b"headlater"
        assert left.gettimeout() == 30.0  # the idle timeout is restored for reads
    finally:
        left.close()
        right.close()


def test_serve_takes_response_timeout_from_its_command_line(capsys):
    from serving.serve import _config, _parser

    assert _config(_parser().parse_args(["--response-timeout", "2.5"]), None).limits().response_timeout_s == 2.5
    assert _config(_parser().parse_args([]), None).limits().response_timeout_s == 60.0
    for bad in ("0", "-1", "inf", "nan", "x"):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(["--response-timeout", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "--response-timeout" in err, err
