"""Raw HTTP helpers for the serving tests: hand-made KServe v2 requests and the refusal check."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import time
from pathlib import Path

import numpy as np


def json_request(shape, data, datatype="UINT8", name="image", **extra) -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}],
                       **extra}).encode()


def binary_request(image: np.ndarray, declared: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 binary-tensor request for an NxHxWx3 uint8 batch; ``declared`` overrides binary_data_size."""
    raw = np.ascontiguousarray(image).tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": len(raw) if declared is None else declared}}],
                         "outputs": [{"name": "deblurred", "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def post(port: int, body: bytes, headers: dict | None = None, path: str = "/v2/models/banet/infer",
         method: str = "POST", timeout: float = 60) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, half_close: bool = False) -> tuple[int, bytes]:
    """Send raw bytes (malformed HTTP welcome); ``half_close`` ends the upload early, like a dropped client."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


_PATH = re.compile(r"(?:/[\w.-]+){2,}|\.py\b|[A-Za-z]:\\")


def assert_clean_refusal(status: int, body: bytes, what: str = "") -> str:
    """A 4xx whose body is one line of JSON {"error": ...} with no traceback and no file path."""
    text = body.decode("utf-8", "replace")
    assert 400 <= status < 500, f"{what}: status {status}: {text[:300]}"
    assert "\n" not in text.strip() and "Traceback" not in text, f"{what}: {text[:300]}"
    assert not _PATH.search(text), f"{what}: path in body: {text[:300]}"
    message = json.loads(text)["error"]
    assert message, what
    return message


class StubModel:
    """A stand-in for Triton behind a front: answers every GET and POST with 200 after ``delay`` seconds (POST
    only) and records (method, path) of what reached it, so tests can tell what the front let through."""

    def __init__(self, delay: float = 0.0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay, self.seen, self.lock = delay, [], threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with stub.lock:
                    stub.seen.append((self.command, self.path))
                if self.command == "POST" and stub.delay:
                    time.sleep(stub.delay)
                body = b'{"outputs": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = ("127.0.0.1", self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def front_starter(make_model, **default_limits):
    """``start(model_options=None, **limits) -> (front, model)``: a front (serving.front) on a free port before a
    model made by ``make_model(**model_options)``, with ``default_limits`` unless overridden; all stopped on exit."""
    from serving.front import start_front
    from serving.request_rules import FrontLimits

    started = []

    def start(model_options: dict | None = None, **limits):
        model = make_model(**(model_options or {}))
        front = start_front("127.0.0.1", 0, FrontLimits(**{**default_limits, **limits}), model.address)
        started.append((front, model))
        return front, model

    try:
        yield start
    finally:
        for front, model in started:
            front.stop()
            model.close()


def child_pids(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
