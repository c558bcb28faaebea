"""Audit findings on the validating front (``serving/front.py``, ``serving/request_rules.py``) and the load test's
command line (``serving/loadtest.py``), each a case that used to go wrong:

- a Content-Length that is never sent held the in-flight byte budget for the bytes it *declared*: two connections
  declaring 145 MB each made every valid request wait 30 s for a 503. The budget now holds what arrived;
- a JSON body over the JSON limit is refused from its Content-Length, before the body is read;
- malformed requests that got 500 instead of a 4xx naming the problem (a version in non-ASCII digits, true/false
  in the pixel data, a ``binary_data`` that is not a boolean, an ``id`` holding a lone surrogate);
- a client resetting its connection printed a 19-line traceback to stderr;
- ``serving.loadtest`` took ``--requests 0``, ``--port 99999``, ``--size 100000x100000`` and ``--threads -1`` and
  failed after loading the model (or allocated 30 GB).

A stand-in model replaces Triton, so the tests take seconds."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time

import numpy as np
import pytest

from serving.front import BODY_CHUNK, _ByteBudget
from serving.request_rules import FrontLimits, RequestError
from tests.serving.helpers import (
    StubModel,
    assert_clean_refusal,
    binary_request,
    front_starter,
    json_request,
    post,
    raw_exchange,
)

INFER = "/v2/models/banet/infer"


@pytest.fixture
def front_on():
    """start(**limits) -> (front, stub model); everything stopped afterwards."""
    with front_starter(StubModel, request_timeout_s=10.0, idle_timeout_s=30.0) as start:
        yield lambda **limits: start(None, **limits)


@pytest.fixture(scope="module")
def shared_front():
    """One front with the default limits for the request-format tests: (front, model), ``model.seen`` emptied for
    each test by :func:`default_front`."""
    with front_starter(StubModel) as start:
        yield start()


@pytest.fixture
def default_front(shared_front):
    shared_front[1].seen.clear()
    return shared_front


def _image(side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)


def _head(length: int, path: str = INFER, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _status(sock: socket.socket) -> tuple[int, bytes]:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# -- the byte budget counts bytes received ----------------------------------------------------------------------
def test_lying_content_lengths_hold_no_budget_and_block_no_request(front_on):
    """Two clients declare a body at the limit (the whole budget between them) and send none of it: a valid request
    is still answered at once (it waited busy_wait_s and got 503), and the liars hold at most a chunk each."""
    front, model = front_on(busy_wait_s=3.0)
    total, limit = front.limits.inflight_limit, front.limits.body_limit
    liars = [socket.create_connection(("127.0.0.1", front.port), timeout=10) for _ in range(2)]
    try:
        for liar in liars:
            liar.sendall(_head(limit, extra="Inference-Header-Content-Length: 100\r\n"))
        _until(lambda: front.budget._free <= total - 2 * min(limit, BODY_CHUNK), 5, "the liars' headers not read")
        started = time.monotonic()
        status, body, _ = post(front.port, *binary_request(_image()), timeout=10)
        waited = time.monotonic() - started
        assert status == 200, body
        assert waited < 1.5, f"a valid request waited {waited:.1f} s behind connections that sent no body"
        assert front.budget._free >= total - 2 * BODY_CHUNK, "bytes never received are held in the budget"
    finally:
        for liar in liars:
            liar.close()
    assert [path for _, path in model.seen] == [INFER]


def test_bytes_really_in_flight_still_get_503(front_on):
    """Room for one body: a client that sent most of one holds it, so a second request waits busy_wait_s for room
    and gets 503 with Retry-After, and the stalled one is never forwarded."""
    body, headers = binary_request(_image(side=600))  # about 1 MiB
    front, model = front_on(max_inflight_bytes=len(body), max_body_bytes=len(body), busy_wait_s=0.5)
    stalled = socket.create_connection(("127.0.0.1", front.port), timeout=10)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        stalled.sendall(_head(len(body), extra=extra) + body[:len(body) * 3 // 4])
        _until(lambda: front.budget._free < len(body) // 2, 5, "the stalled body not received")
        status, answer, response_headers = post(front.port, body, headers, timeout=10)
        message = json.loads(answer)["error"]
        assert status == 503 and "busy" in message and response_headers.get("Retry-After"), (status, message)
    finally:
        stalled.close()
    assert model.seen == []


def test_requests_waiting_on_each_other_for_room_are_not_left_to_time_out():
    """Two requests each hold half the budget and both need more: the second to wait is refused at once (before,
    a hold was all or nothing, so this could not happen; waiting would stall both for wait_s), and the first
    gets the room it freed."""
    budget = _ByteBudget(100)
    got: list = []
    with budget.lease(5.0) as first:
        first.grow(50)
        waiter = threading.Thread(target=lambda: got.append(first.grow(10)))
        with budget.lease(5.0) as second:
            second.grow(50)
            waiter.start()
            _until(lambda: first.waiting, 2, "the first request never waited")
            started = time.monotonic()
            with pytest.raises(RequestError) as refused:
                second.grow(10)
            assert refused.value.status == 503 and time.monotonic() - started < 1
        waiter.join(5)
        assert got and first.held == 60
    assert budget.free == 100


# -- JSON over its limit: refused from the headers ---------------------------------------------------------------
def test_json_over_its_limit_is_refused_from_its_content_length(front_on):
    """A JSON request declaring more than max_json_bytes gets 413 without its body being read into memory: a
    client that never sends it gets 413 (it waited for the body, then 408)."""
    front, model = front_on(max_json_bytes=1000, request_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        sock.sendall(_head(5000, extra="Content-Type: application/json\r\n"))
        status, body = _status(sock)
    message = assert_clean_refusal(status, body)
    assert status == 413 and "JSON" in message and "5000" in message, (status, message)
    assert front.budget.free == front.limits.inflight_limit and model.seen == []
    ok = json_request([1, 2, 2, 3], [0] * 12)  # under the limit: forwarded
    assert post(front.port, ok, {"Content-Type": "application/json"})[0] == 200


# -- malformed requests get a 4xx naming the problem, not 500 ----------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("POST", b"/v2/models/banet/versions/\xb2/infer"),  # '²' in Latin-1, as http.server reads the request line
    ("GET", b"/v2/models/banet/versions/\xb9"),
    ("GET", b"/v2/models/banet/versions/\xb9/ready"),
    ("GET", b"/v2/models/banet/versions/\xd9\xa1/ready"),  # two Latin-1 letters, not digits: refused already
])
def test_a_version_in_non_ascii_digits_is_400(default_front, method, path):
    front, model = default_front
    body, headers = binary_request(_image())
    request = f"{method} ".encode() + path + b" HTTP/1.1\r\nHost: x\r\n"
    if method == "POST":
        request += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        request += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    else:
        request += b"\r\n"
    status, answer = raw_exchange(front.port, request)  # no half-close: the front drops a request whose client left
    message = assert_clean_refusal(status, answer, repr(path))
    assert status == 400 and "version" in message, (status, message)
    assert model.seen == []


def _json_body(**changes) -> bytes:
    request = json.loads(json_request([1, 2, 2, 3], [7] * 12))
    for key, value in changes.items():
        request[key] = value
    return json.dumps(request).encode()


def _with_data(data: list) -> bytes:
    return json_request([1, 2, 2, 3], data)


@pytest.mark.parametrize("what, body, expected", [
    ("true first in flat data", _with_data([True] + [1] * 11), "true or false"),
    ("false in nested data", _with_data([[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, False]]]]), "true or false"),
    ("all booleans", _with_data([True] * 12), "integers 0-255"),
    ("a float", _with_data([1.5] + [1] * 11), "integers 0-255"),
    ("binary_data 1", _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": 1}}]), "binary_data"),
    ("binary_data NaN", _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": float("nan")}}]),
     "binary_data"),
    ("binary_data a list", _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": [True]}}]),
     "binary_data"),
    ("binary_data a string", _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": "true"}}]),
     "binary_data"),
    ("a lone high surrogate id", _json_body(id="\ud800"), "'id'"),
    ("a lone low surrogate in an id", _json_body(id="a\udc00b"), "'id'"),
    ("a NUL in an id (round 17: Triton answered it cut short)", _json_body(id="a\u0000b"), "NUL character"),
])
def test_malformed_json_requests_get_400_and_never_reach_the_model(default_front, what, body, expected):
    front, model = default_front
    status, answer, _ = post(front.port, body, {"Content-Type": "application/json"})
    message = assert_clean_refusal(status, answer, what)
    assert status == 400 and expected in message, (what, status, message)
    assert model.seen == [], what


@pytest.mark.parametrize("body", [
    _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": False}}]),
    _json_body(outputs=[{"name": "deblurred", "parameters": {"binary_data": True}}]),
    _json_body(id="photo \u00e9\U0001f600"),  # any Unicode that UTF-8 can hold
    _with_data([[[[0, 255, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]]),
])
def test_well_formed_json_requests_still_pass(default_front, body):
    front, model = default_front
    assert post(front.port, body, {"Content-Type": "application/json"})[0] == 200
    assert [path for _, path in model.seen] == [INFER]


# -- client resets: one log line, no traceback -------------------------------------------------------------------
def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a client does that closes with unread data."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _wait_for_log(caplog, capfd, text: str) -> str:
    """Everything written to stderr until a log record holding ``text`` appeared (or a traceback, or 5 s)."""
    err, deadline = "", time.monotonic() + 5
    while time.monotonic() < deadline:
        err += capfd.readouterr().err
        if "Traceback" in err or any(text in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.02)
    time.sleep(0.1)  # anything printed right after
    return err + capfd.readouterr().err


@pytest.mark.parametrize("during", ["between requests", "the body"])
def test_a_client_reset_is_one_log_line_and_no_traceback(front_on, caplog, capfd, during):
    caplog.set_level(logging.DEBUG, logger="serving.front")
    front, _ = front_on()
    sock = socket.create_connection(("127.0.0.1", front.port), timeout=10)
    if during == "between requests":  # answered, the answer left unread, then a reset: the next read fails
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        _until(lambda: sock.recv(4096, socket.MSG_PEEK).endswith(b"}"), 5, "no whole answer")  # left unread
        expected = "connection from 127.0.0.1 ended: connection reset"
    else:  # a body cut off by a reset
        sock.sendall(_head(100_000, extra="Content-Type: application/json\r\n") + b"{" * 10)
        _until(lambda: front.budget._free < front.limits.inflight_limit, 5, "the body never started")
        expected = "while sending its body (connection reset"
    _reset(sock)
    err = _wait_for_log(caplog, capfd, expected)
    assert "Traceback" not in err and "ConnectionResetError" not in err, err
    lines = [r for r in caplog.records if expected in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno <= logging.INFO and not lines[0].exc_info, caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], caplog.text
    assert post(front.port, None, path="/v2/health/live", method="GET", timeout=5)[0] == 200


def test_internal_errors_on_a_connection_keep_their_traceback(front_on, caplog, capfd):
    """socketserver's hook: a client's reset is one debug line, a real bug is an error with its traceback."""
    caplog.set_level(logging.DEBUG, logger="serving.front")
    front, _ = front_on()
    caplog.clear()
    for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe"),
                  TimeoutError("timed out"), RuntimeError("a bug")):
        try:
            raise error
        except Exception:
            front.handle_error(None, ("127.0.0.1", 5))
    records = [(r.levelno, bool(r.exc_info), r.getMessage()) for r in caplog.records]
    assert records[:3] == [(logging.DEBUG, False, "connection from 127.0.0.1 ended: connection reset by peer"),
                           (logging.DEBUG, False, "connection from 127.0.0.1 ended: broken pipe"),
                           (logging.DEBUG, False, "connection from 127.0.0.1 ended: timed out")], records
    assert records[3][:2] == (logging.ERROR, True) and len(records) == 4, records
    assert "Traceback" not in capfd.readouterr().err  # the log's handler shows it; socketserver prints nothing


# -- the load test's command line --------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the command gets as far as its work (test images, a Deblurrer, a server)."""
    import runtime
    from serving import loadtest

    def refuse(*args, **kwargs):
        raise AssertionError("the load test started before refusing its options")

    monkeypatch.setattr(runtime, "Deblurrer", refuse)
    monkeypatch.setattr(loadtest, "photo_images", refuse)
    monkeypatch.setattr(loadtest, "burst", refuse)


@pytest.mark.parametrize("argv, option", [
    (["--requests", "0"], "--requests"),
    (["--requests", "-5"], "--requests"),
    (["--requests", "ten"], "--requests"),
    (["--port", "99999"], "--port"),
    (["--port", "0"], "--port"),
    (["--port", "65535"], "--port"),  # its metrics port (+2) would be over 65535
    (["--size", "100000x100000"], "--size"),
    (["--size", "1x64"], "--size"),
    (["--size", "64"], "--size"),
    (["--burst", "2", "--size", "10000x10000"], "--size"),
    (["--threads", "-1"], "--threads"),
    (["--threads", "100000"], "--threads"),
    (["--concurrency", "1,100000"], "--concurrency"),
])
def test_loadtest_refuses_nonsense_options_in_one_line_before_any_work(no_work, capsys, argv, option):
    from serving import loadtest

    with pytest.raises(SystemExit) as exited:
        loadtest.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and option in err, err
    assert "Traceback" not in err


def test_a_value_read_as_an_option_is_explained(no_work, capsys):
    """Round 17: ``--size -5x10`` said only "argument --size: expected one argument"."""
    from serving import loadtest

    with pytest.raises(SystemExit):
        loadtest.main(["--size", "-5x10"])
    err = capsys.readouterr().err
    assert "a value that starts with '-' is read as an option: write --size=VALUE" in err
    assert len(err.strip().splitlines()) == 1


def test_loadtest_takes_sensible_options(no_work, tmp_path, monkeypatch):
    from serving import loadtest

    monkeypatch.chdir(tmp_path)  # several concurrencies write results under ./benchmarks/results

    with pytest.raises(AssertionError, match="started"):  # parsed, then on to the work
        loadtest.main(["--requests", "1", "--port", "65533", "--size", "2x2", "--threads", "0",
                       "--concurrency", "1,256"])
    with pytest.raises(AssertionError, match="started"):
        loadtest.main(["--size", f"{FrontLimits().max_pixels // 8000}x8000", "--threads", "1"])


def test_a_large_refused_request_hands_its_memory_back(front_on, monkeypatch):
    """Round 17: only answered requests were followed by release_memory(); eight refused 30 MiB JSON requests left
    the process 360 MB larger for good."""
    import serving.front

    released = []
    monkeypatch.setattr(serving.front, "release_memory", lambda: released.append(1))
    front, model = front_on()
    side = 1700  # about 9 MB of JSON digits, over LARGE_BYTES; the last value (256) is refused after parsing
    values = [7] * (side * side * 3 - 1) + [256]
    body = json_request([1, side, side, 3], values)
    assert len(body) >= serving.front.LARGE_BYTES
    status, answer, _ = post(front.port, body, {"Content-Type": "application/json"})
    assert status == 400, answer
    _until(lambda: released, 10, "release_memory after the refusal")  # right after the answer is sent
    assert not model.seen


def test_a_dropped_request_is_logged_with_its_url_and_why(front_on, caplog):
    """Round 17: "dropped POST <path>: the client hung up " (the URL scrubbed as a file path, the reason blank)."""
    import logging

    from serving.front import ClientGone

    front, _ = front_on()
    handler = type("H", (), {})()
    handler.command, handler.path, handler.close_connection = "POST", INFER, False

    def gone():
        raise ClientGone()

    with caplog.at_level(logging.INFO, logger="serving.front"):
        serving_front_handled(handler, gone)
    assert f"dropped POST {INFER}: the client hung up while it waited for the model" in caplog.text


def serving_front_handled(handler, call) -> None:
    from serving.front import _Handler

    _Handler._handled(handler, call)


@pytest.mark.parametrize("busy_offset, says", [(0, "cannot listen on 127.0.0.1:"), (2, "pick another --port")])
def test_loadtest_on_a_busy_port_is_one_line(capsys, busy_offset, says):
    """Round 17: a port in use ended the load test in a ServeError traceback; its metrics port (--port + 2) said
    "pick another with --metrics-port", an option the load test does not have."""
    from serving import loadtest

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    if base + 2 > 65535:
        base -= 10
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", base + busy_offset))
        busy.listen()
        code = loadtest.main(["--requests", "2", "--concurrency", "1", "--port", str(base)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and says in err, err
    assert "--metrics-port" not in err


def test_requests_left_when_the_server_stops_get_503_not_502(front_on):
    """Round 17: requests still waiting when the server was stopped got 502 "the inference server is not available",
    as if it had failed, not 503 with Retry-After."""
    front, _ = front_on()
    with socket.socket() as probe:  # a port nothing listens on: the model server gone
        probe.bind(("127.0.0.1", 0))
        gone = probe.getsockname()[1]
    front.upstream = ("127.0.0.1", gone)
    front.stopping = True
    status, body, headers = post(front.port, *binary_request(_image()), timeout=10)
    assert status == 503 and b"the server is stopping" in body and headers.get("Retry-After"), (status, body)
