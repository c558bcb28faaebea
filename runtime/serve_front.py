"""Validating HTTP front for ``runtime.serve``: the public HTTP port, in front of Triton on a private loopback port.

Why it exists: the bundled Triton (2.51) allocates what a JSON request *declares* before it looks at the data,
so one 95-byte request declaring shape [1, 1000000, 1000000, 3] aborts the whole server (``std::bad_alloc``);
no code inside the model can catch that. This front reads every request first and answers what the model
cannot serve itself, with a 4xx status and a one-line JSON body ``{"error": "..."}`` (never a traceback):

- 411/413/415 before the body is read: no Content-Length (chunked), a body over ``max_body_bytes``, a
  JSON-encoded body over ``max_json_bytes`` (use binary tensors for large images; the client does), or a
  compressed body;
- 400: an inference header that is not KServe v2 JSON for this model: one input ``image``, datatype UINT8,
  shape [N, H, W, 3] with 1 <= N <= max_batch and H, W >= ``min_side``; data that does not match the shape
  (JSON ``data`` must hold exactly N*H*W*3 integers 0-255; a binary tensor must declare ``binary_data_size``
  N*H*W*3 and the body must hold exactly that many bytes after the ``Inference-Header-Content-Length``
  header); shared-memory tensors and unknown parameters;
- 413: an image over ``max_pixels`` pixels (H*W);
- 404: another model, or any endpoint other than inference, health and model metadata/config/ready/stats
  (model loading, logging, tracing and shared-memory registration stay private);
- 503: too many connections, or too many request bytes already in flight (``max_inflight_bytes``).

Good requests are forwarded byte for byte. Triton's own error bodies are reduced to one line: the infer
function tags its errors with :func:`error_tag` so the reason and status survive PyTriton's traceback
wrapping; any other traceback becomes "internal error" (details stay in the server log).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np

from runtime.images import MIN_SIDE

log = logging.getLogger(__name__)

MB = 1 << 20
#: A refused body up to this size is read and dropped, so the client can read the refusal.
DRAIN_LIMIT = 256 * MB
#: About 48 megapixels: an 8000x6000 photo.
DEFAULT_MAX_PIXELS = 8000 * 6000
INPUT_NAME, OUTPUT_NAME = "image", "deblurred"
_REQUEST_PARAMETERS = {"binary_data_output": bool, "priority": int, "timeout": int}
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/config|/stats|/infer)?$")
_GET_PATHS = {"/v2", "/v2/health/live", "/v2/health/ready"}
_TAG = re.compile(r"<<banet-error (\d{3}): (.*?)>>")
INTERNAL_ERROR = "internal error while running the model (see the server log)"
_PATH_LIKE = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.~-]+){2,}[/\\]?")


@dataclass(frozen=True)
class FrontLimits:
    """What the front accepts. ``max_body_bytes`` None: one image of ``max_pixels`` plus 1 MiB of header."""

    model: str = "banet"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body_bytes: int | None = None
    max_json_bytes: int = 32 * MB
    max_header_bytes: int = 64 * 1024
    max_inflight_bytes: int | None = None  # None: twice the body limit
    max_batch: int = 8
    min_side: int = MIN_SIDE
    max_connections: int = 64
    idle_timeout_s: float = 60.0
    upstream_timeout_s: float = 600.0
    busy_wait_s: float = 30.0

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes if self.max_body_bytes is not None else self.max_pixels * 3 + MB

    @property
    def inflight_limit(self) -> int:
        return self.max_inflight_bytes if self.max_inflight_bytes is not None else 2 * self.body_limit


class RequestError(Exception):
    """A request the front answers itself: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)


# -- messages -------------------------------------------------------------------------------------------------
def one_line(text: object, limit: int = 300) -> str:
    """Whitespace collapsed, file-system paths replaced by <path>, cut to ``limit`` characters."""
    text = _PATH_LIKE.sub("<path>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_tag(status: int, message: object) -> str:
    """Wrap an infer-function error so the front can recover its status and one-line reason from Triton."""
    return f"<<banet-error {status}: {one_line(message).replace('>>', '> >')}>>"


def clean_upstream_error(status: int, body: bytes) -> tuple[int, str]:
    """Triton's error response -> (status, one-line message) without tracebacks or paths."""
    try:
        message = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    tagged = find_tag(message)
    if tagged:
        return tagged
    if "Traceback" in message or 'File "' in message:
        return (500 if status >= 500 else status), INTERNAL_ERROR
    return status, one_line(message) or f"inference server answered {status}"


def find_tag(text: str) -> tuple[int, str] | None:
    """The (status, message) of an :func:`error_tag` inside ``text`` (e.g. a traceback), or None."""
    tagged = _TAG.search(text)
    return (int(tagged.group(1)), one_line(tagged.group(2))) if tagged else None


def scrub_config(body: bytes) -> bytes:
    """Model config JSON without parameters that hold paths (PyTriton puts its workspace path there)."""
    try:
        config = json.loads(body)
        parameters = config.get("parameters") or {}
        config["parameters"] = {k: v for k, v in parameters.items() if not _PATH_LIKE.search(json.dumps(v))}
    except (ValueError, AttributeError):
        return body
    return json.dumps(config).encode()


def _printable(name: str) -> str:
    return one_line(name.encode("ascii", "backslashreplace").decode(), limit=64)


# -- request checks -------------------------------------------------------------------------------------------
def check_infer_request(body: bytes, header_length: int | None, limits: FrontLimits) -> None:
    """Raise :class:`RequestError` unless ``body`` is an inference request the model can serve."""
    if header_length is None and len(body) > limits.max_json_bytes:
        raise RequestError(413, f"JSON request of {len(body)} bytes is over the {limits.max_json_bytes} byte "
                                "limit for JSON data; send the image as a binary tensor")
    header_bytes = body if header_length is None else body[:header_length]
    request = _parse_json(header_bytes)
    _check_keys(request, {"id", "inputs", "outputs", "parameters"}, "request")
    _check_request_parameters(request.get("parameters", {}))
    _check_outputs(request.get("outputs", []))
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"'inputs' must list exactly one tensor, named '{INPUT_NAME}'")
    binary = None if header_length is None else len(body) - header_length
    _check_input(inputs[0], binary, limits)


def _parse_json(data: bytes) -> dict:
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        raise RequestError(400, "request header is not valid JSON") from None
    if not isinstance(request, dict):
        raise RequestError(400, "request header must be a JSON object")
    return request


def _check_keys(obj: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise RequestError(400, f"unsupported field '{_printable(str(unknown[0]))}' in {what}")


def _check_request_parameters(parameters: object) -> None:
    if not isinstance(parameters, dict):
        raise RequestError(400, "'parameters' must be a JSON object")
    for key, value in parameters.items():
        kind = _REQUEST_PARAMETERS.get(key)
        if kind is None:
            raise RequestError(400, f"unsupported request parameter '{_printable(key)}'")
        if type(value) is not kind:
            raise RequestError(400, f"request parameter '{key}' must be {kind.__name__}")


def _check_outputs(outputs: object) -> None:
    if not isinstance(outputs, list) or len(outputs) > 1:
        raise RequestError(400, f"'outputs' must be a list naming at most '{OUTPUT_NAME}'")
    for output in outputs:
        if not isinstance(output, dict) or output.get("name") != OUTPUT_NAME:
            raise RequestError(400, f"the model has one output, '{OUTPUT_NAME}'")
        _check_keys(output, {"name", "parameters"}, "output")
        parameters = output.get("parameters", {})
        if not isinstance(parameters, dict) or set(parameters) - {"binary_data"}:
            raise RequestError(400, "output parameters other than 'binary_data' (e.g. shared memory) are not "
                                    "accepted")


def _check_input(tensor: dict, binary_bytes: int | None, limits: FrontLimits) -> None:
    _check_keys(tensor, {"name", "shape", "datatype", "parameters", "data"}, "input")
    if tensor.get("name") != INPUT_NAME:
        raise RequestError(400, f"unknown input '{_printable(str(tensor.get('name')))}'; the model takes "
                                f"'{INPUT_NAME}'")
    if tensor.get("datatype") != "UINT8":
        raise RequestError(400, f"input '{INPUT_NAME}' must have datatype UINT8, got "
                                f"'{_printable(str(tensor.get('datatype')))}'")
    count = _check_shape(tensor.get("shape"), limits)
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict) or set(parameters) - {"binary_data_size"}:
        raise RequestError(400, "input parameters other than 'binary_data_size' (e.g. shared memory) are not "
                                "accepted")
    if "binary_data_size" in parameters:
        _check_binary(parameters["binary_data_size"], "data" in tensor, binary_bytes, count)
    else:
        if binary_bytes:
            raise RequestError(400, f"body carries {binary_bytes} bytes after the header, but the input declares "
                                    "no binary_data_size")
        _check_json_data(tensor.get("data"), count)


def _check_shape(shape: object, limits: FrontLimits) -> int:
    """Validate [N, H, W, 3]; return the element count N*H*W*3."""
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
        raise RequestError(400, "input shape must be [N, H, W, 3] with non-negative integers (N = batch)")
    n, height, width, channels = shape
    if channels != 3:
        raise RequestError(400, f"images must have 3 channels (BGR), got {channels}")
    if not 1 <= n <= limits.max_batch:
        raise RequestError(400, f"batch size must be 1 to {limits.max_batch}, got {n}")
    if min(height, width) < limits.min_side:
        raise RequestError(400, f"image of {height}x{width} pixels is too small to deblur (at least "
                                f"{limits.min_side}x{limits.min_side})")
    if height * width > limits.max_pixels:
        raise RequestError(413, f"image of {height}x{width} = {height * width:,} pixels is over the server's "
                                f"limit of {limits.max_pixels:,} pixels")
    return n * height * width * channels


def _check_binary(size: object, has_json_data: bool, binary_bytes: int | None, count: int) -> None:
    if binary_bytes is None:
        raise RequestError(400, "binary_data_size given without an Inference-Header-Content-Length header")
    if has_json_data:
        raise RequestError(400, "input has both 'data' and binary_data_size")
    if type(size) is not int or size != count:
        raise RequestError(400, f"binary_data_size must be {count} bytes for the declared shape, got "
                                f"{_printable(str(size))}")
    if binary_bytes != size:
        raise RequestError(400, f"body holds {binary_bytes} bytes of binary data, but the input declares {size}")


def _check_json_data(data: object, count: int) -> None:
    if not isinstance(data, list):
        raise RequestError(400, f"input '{INPUT_NAME}' needs 'data' (a list of {count} integers) or a binary "
                                "tensor")
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(400, "'data' must be a flat or evenly nested list of integers 0-255") from None
    if array.size != count:
        raise RequestError(400, f"'data' holds {array.size} values, but the declared shape needs {count}")
    if array.dtype.kind not in "iu" or (count and (array.min() < 0 or array.max() > 255)):
        raise RequestError(400, "'data' must hold integers 0-255 (UINT8)")


# -- the server -----------------------------------------------------------------------------------------------
class _ByteBudget:
    """Caps the request bytes held in memory at once; a request waits up to ``wait_s`` for room."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._free = total
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, size: int, wait_s: float) -> Iterator[None]:
        size = min(size, self._total)
        with self._cond:
            if not self._cond.wait_for(lambda: self._free >= size, timeout=wait_s):
                raise RequestError(503, "server busy with other large requests; retry later")
            self._free -= size
        try:
            yield
        finally:
            with self._cond:
                self._free += size
                self._cond.notify_all()


class FrontServer(ThreadingHTTPServer):
    """The front: one thread per connection, at most ``max_connections`` at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], limits: FrontLimits, upstream: tuple[str, int]) -> None:
        self.limits = limits
        self.upstream = upstream
        self.budget = _ByteBudget(limits.inflight_limit)
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_connection(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> FrontServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="serve-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def _refuse_connection(sock: socket.socket) -> None:
    body = json.dumps({"error": "too many connections; retry later"}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            "\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.sendall(head + body)
    except OSError:
        pass


def _declared_length(headers) -> int | None:
    """A plain, valid Content-Length (no chunking), or None."""
    values = headers.get_all("Content-Length") or []
    if headers.get("Transfer-Encoding") or len(set(values)) != 1 or not values[0].strip().isdigit():
        return None
    return int(values[0])


class _Handler(BaseHTTPRequestHandler):
    """One client connection (keep-alive): route, check, forward to Triton, clean error bodies."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so even a garbled request line gets a status line back
    server: FrontServer
    server_version = "banet-front"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.limits.idle_timeout_s
        self._upstream_conn: http.client.HTTPConnection | None = None
        super().setup()

    def finish(self) -> None:
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method...) as one-line JSON too."""
        self.close_connection = True
        if code == 501:  # http.server's answer to a method without a do_ handler
            code, message = 405, f"method {_printable(str(self.command))} not allowed"
        self._send_json_error(code, message or self.responses.get(code, ("error",))[0])

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)

    # -- routes ---------------------------------------------------------------------------------------------
    def _guarded(self, handler) -> None:
        self._body_read = False
        self._unread = _declared_length(self.headers)  # body bytes declared but not read yet
        try:
            handler()
        except RequestError as exc:
            if not self._body_read:
                self._drain_or_close()
            log.info("refused %s: %d %s", self.command, exc.status, exc.message)
            self._send_json_error(exc.status, exc.message)
        except Exception:
            log.exception("front: unexpected error")
            self.close_connection = True
            self._send_json_error(500, "internal error in the request front (see the server log)")

    def _get(self) -> None:
        self._body_read = True
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a GET body is not read; do not parse it as the next request
        path = self._route({None, "/ready", "/config", "/stats"}, allow_plain=True)
        self._forward("GET", path, None, {})

    def _post(self) -> None:
        path = self._route({"/infer"}, allow_plain=False)
        length = self._content_length()
        header_length = self._header_length(length)
        with self.server.budget.hold(length, self.server.limits.busy_wait_s):
            body = self._read_body(length)
            check_infer_request(body, header_length, self.server.limits)
            headers = {k: self.headers[k] for k in ("Content-Type",) if self.headers.get(k)}
            if header_length is not None:
                headers["Inference-Header-Content-Length"] = str(header_length)
            self._forward("POST", path, body, headers)

    def _route(self, suffixes: set[str | None], allow_plain: bool) -> str:
        """The upstream path for this request, or RequestError 404."""
        path = self.path.split("?", 1)[0]
        if allow_plain and path in _GET_PATHS:
            return path
        match = _MODEL_PATH.match(path)
        if not match or match.group(3) not in suffixes:
            raise RequestError(404, "no such endpoint; this server offers inference, model metadata and health "
                                    "checks (KServe v2 HTTP)")
        model, version = unquote(match.group(1)), match.group(2)
        if model != self.server.limits.model:
            raise RequestError(404, f"unknown model '{_printable(model)}'; this server serves "
                                    f"'{self.server.limits.model}'")
        if version is not None and not version.isdigit():
            raise RequestError(400, "model version must be a number")
        return path

    # -- body -----------------------------------------------------------------------------------------------
    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "chunked request bodies are not accepted; send Content-Length")
        if self.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise RequestError(415, "compressed request bodies are not accepted")
        values = set(self.headers.get_all("Content-Length") or [])
        if not values:
            raise RequestError(411, "Content-Length required")
        if len(values) > 1 or not next(iter(values)).strip().isdigit():
            raise RequestError(400, "invalid Content-Length")
        length = int(next(iter(values)))
        if length > self.server.limits.body_limit:
            raise RequestError(413, f"request body of {length} bytes is over the server's limit of "
                                    f"{self.server.limits.body_limit} bytes")
        return length

    def _header_length(self, length: int) -> int | None:
        value = self.headers.get("Inference-Header-Content-Length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise RequestError(400, "invalid Inference-Header-Content-Length")
        header_length = int(value)
        if header_length > length or header_length > self.server.limits.max_header_bytes:
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} is over the body length "
                                    f"or the {self.server.limits.max_header_bytes} byte header limit")
        return header_length

    def _drain_or_close(self) -> None:
        """After an early refusal: read and drop a moderate body so the client sees the answer, else hang up."""
        if self._unread is None or self._unread > DRAIN_LIMIT:
            self.close_connection = True
            return
        left = self._unread
        try:
            while left:
                chunk = self.rfile.read(min(left, MB))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass
        self.close_connection = bool(left)

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, "timed out reading the request body") from None
        if len(body) != length:
            raise RequestError(400, f"request body ended after {len(body)} of {length} bytes")
        self._body_read = True
        return body

    # -- upstream -------------------------------------------------------------------------------------------
    def _forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        status, response_headers, data = self._exchange(method, path, body, headers)
        if status >= 400:
            status, message = clean_upstream_error(status, data)
            self._send_json_error(status, message)
            return
        keep = {k: v for k, v in response_headers if k.lower() in ("content-type", "inference-header-content-length")}
        if method == "GET" and path.endswith("/config"):
            data = scrub_config(data)
        self._send(status, data, keep)

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to Triton; a kept-alive connection that Triton closed is retried once on a fresh one."""
        for attempt in range(2):
            reused = self._upstream_conn is not None
            conn = self._upstream()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except TimeoutError:
                self._drop_upstream()
                raise RequestError(504, "the model did not answer within "
                                        f"{self.server.limits.upstream_timeout_s:.0f} s") from None
            except (OSError, http.client.HTTPException):
                self._drop_upstream()
                if not reused or attempt:
                    raise RequestError(502, "the inference server is not available") from None
        raise AssertionError("unreachable")

    def _upstream(self) -> http.client.HTTPConnection:
        if self._upstream_conn is None:
            host, port = self.server.upstream
            self._upstream_conn = http.client.HTTPConnection(host, port,
                                                             timeout=self.server.limits.upstream_timeout_s)
        return self._upstream_conn

    def _drop_upstream(self) -> None:
        if self._upstream_conn is not None:
            self._upstream_conn.close()
            self._upstream_conn = None

    # -- responses ------------------------------------------------------------------------------------------
    def _send_json_error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": one_line(message)}).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True


def start_front(host: str, port: int, limits: FrontLimits, upstream: tuple[str, int]) -> FrontServer:
    """Bind the front on ``host:port`` and serve in a background thread."""
    server = FrontServer((host, port), limits, upstream).start()
    log.info("validating front on http://%s:%d -> Triton http://%s:%d", host, server.port, *upstream)
    return server
