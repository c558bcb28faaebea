"""Overload behaviour of the validating front (:class:`serving.front.AdmissionQueue`), with a stand-in model
behind it: an HTTP upstream that takes a fixed time per request and counts what it computed. The front is the
one ``serving.serve`` runs; only Triton is replaced, so that "computed or not" can be counted exactly and the
tests take seconds."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from serving.front import AdmissionQueue, start_front
from serving.request_rules import FrontLimits, RequestError
from tests.serving.helpers import binary_request, post


class _SlowModel(ThreadingHTTPServer):
    """Answers every POST with 200 after ``delay`` seconds; ``computed`` counts the requests it received."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay, self.computed, self.lock = delay, 0, threading.Lock()
        self.started = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                with self.server.lock:
                    self.server.computed += 1
                self.server.started.set()
                time.sleep(self.server.delay)
                body = b'{"outputs": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def slow_front():
    """(model, start(limits) -> front): fronts on a 1 s stand-in model, stopped afterwards."""
    model, fronts = _SlowModel(delay=1.0), []

    def start(**limits):
        fronts.append(start_front("127.0.0.1", 0, FrontLimits(batch_pixels=1, **limits),
                                  ("127.0.0.1", model.server_address[1])))
        return fronts[-1]

    yield model, start
    for front in fronts:
        front.stop()
    model.shutdown()
    model.server_close()


def _request(side: int = 4):
    return binary_request(np.zeros((1, side, side, 3), np.uint8))


def _in_background(port: int, results: list, side: int = 4) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(post(port, *_request(side), timeout=30)))
    thread.start()
    return thread


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _busy_refusal(status: int, body: bytes, headers: dict) -> str:
    assert status == 503, (status, body)
    assert int(headers["Retry-After"]) >= 1
    text = body.decode()
    assert "\n" not in text.strip() and "Traceback" not in text
    return json.loads(text)["error"]


def test_full_queue_gets_503_with_retry_after_and_the_waiting_request_is_served(slow_front):
    model, start = slow_front
    front = start(queue_size=1)
    results: list = []
    running = _in_background(front.port, results)
    model.started.wait(5)
    waiting = _in_background(front.port, results)
    _wait(lambda: front.queue.waiting == 1)
    message = _busy_refusal(*post(front.port, *_request()))
    assert "already wait" in message
    running.join()
    waiting.join()
    assert [r[0] for r in results] == [200, 200] and model.computed == 2


def test_a_request_whose_client_hung_up_is_not_computed(slow_front):
    model, start = slow_front
    front = start(queue_size=4)
    results: list = []
    running = _in_background(front.port, results)
    model.started.wait(5)
    body, headers = _request()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", front.port)) as sock:
        sock.sendall(f"POST /v2/models/banet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n"
                     .encode() + body)
        _wait(lambda: front.queue.waiting == 1)
    _wait(lambda: front.queue.waiting == 0)
    assert not results and model.computed == 1  # dropped while the model was still busy, not when it was free
    running.join()
    assert results[0][0] == 200
    assert post(front.port, *_request())[0] == 200
    assert model.computed == 2  # the abandoned request never reached the model


def test_a_request_that_would_miss_its_deadline_is_refused_before_it_is_computed(slow_front):
    model, start = slow_front
    front = start(queue_size=4, deadline_s=1.5)
    side = 256  # 65,536 pixels: large enough for the front to time the model (1 s for it)
    assert post(front.port, *_request(side))[0] == 200
    assert front.queue.estimate(side * side) == pytest.approx(1.0, abs=0.5)
    results: list = []
    running = _in_background(front.port, results, side)
    _wait(lambda: model.computed == 2)
    started = time.monotonic()
    message = _busy_refusal(*post(front.port, *_request(side)))  # ~1 s left of the running one + 1 s > 1.5 s
    assert "after its deadline" in message and time.monotonic() - started < 0.5
    running.join()
    assert results[0][0] == 200 and model.computed == 2


def test_queue_runs_small_requests_together_and_big_ones_alone():
    queue = AdmissionQueue(queue_size=0, batch_pixels=100)
    never_gone = lambda: False  # noqa: E731
    with queue.slot(40, time.monotonic() + 10, never_gone), queue.slot(60, time.monotonic() + 10, never_gone):
        assert queue.running == 2
        with pytest.raises(RequestError) as info, queue.slot(1, time.monotonic() + 10, never_gone):
            pass
        assert info.value.status == 503 and info.value.retry_after >= 1  # nothing may wait: queue_size 0
    with queue.slot(1000, time.monotonic() + 10, never_gone):  # bigger than batch_pixels: runs alone
        assert queue.running == 1
    assert queue.running == 0 and queue.waiting == 0
