"""The request rules of the validating HTTP front (:mod:`serving.front`): limits, the checks a KServe v2
inference request must pass before it reaches Triton, and the one-line error bodies (tags that survive PyTriton's
traceback wrapping, tracebacks and paths scrubbed). Pure functions of the request bytes: no sockets here."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from dataclasses import dataclass

import numpy as np

from banet.cli_types import number
from banet.triton_marker import DEFAULT_MAX_PIXELS
from runtime.images import MIN_SIDE

MB = 1 << 20
#: A refused body up to this size is read and dropped, so the client can read the refusal.
DRAIN_LIMIT = 256 * MB
#: Pixels the model is given at once (about one 1000x1000 image): more only raises peak memory on a CPU.
BATCH_PIXELS = 1 << 20
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
    idle_timeout_s: float = 60.0  # a kept-alive connection may be silent this long between requests
    request_timeout_s: float = 60.0  # a request must be received whole (line, headers, body) within this
    response_timeout_s: float = 60.0  # a response must be written whole (read by the client) within this
    upstream_timeout_s: float = 600.0
    busy_wait_s: float = 30.0
    queue_size: int = 16  # inference requests that may wait for the model; more get 503 + Retry-After
    deadline_s: float = 120.0  # a request not predicted to be answered within this, from its arrival, gets 503
    batch_pixels: int = BATCH_PIXELS  # requests go to the model together up to this many pixels (or one alone)

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes if self.max_body_bytes is not None else self.max_pixels * 3 + MB

    @property
    def inflight_limit(self) -> int:
        return self.max_inflight_bytes if self.max_inflight_bytes is not None else 2 * self.body_limit


class RequestError(Exception):
    """A request the front answers itself: HTTP ``status``, a one-line ``message`` and, for a 503 that a later
    retry may pass, ``retry_after`` seconds (sent as a Retry-After header)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.retry_after = retry_after


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


def plain_int(text: str | None, digits: int = 18) -> int | None:
    """A header's non-negative integer: ASCII digits only (str.isdigit also takes '²', which int() refuses) and at
    most ``digits`` of them (int() refuses over 4300); None for anything else."""
    text = (text or "").strip()
    return int(text) if 0 < len(text) <= digits and text.isascii() and text.isdigit() else None


def _printable(name: str) -> str:
    return one_line(name.encode("ascii", "backslashreplace").decode(), limit=64)


# -- request checks -------------------------------------------------------------------------------------------
def check_infer_request(body: bytes | bytearray, header_length: int | None, limits: FrontLimits) -> int:
    """Raise :class:`RequestError` unless ``body`` is an inference request the model can serve; return its pixel
    count N*H*W (the work it asks for, which the front's queue schedules by)."""
    if header_length is None and len(body) > limits.max_json_bytes:
        raise RequestError(413, f"JSON request of {len(body)} bytes is over the {limits.max_json_bytes} byte "
                                "limit for JSON data; send the image as a binary tensor")
    header_bytes = body if header_length is None else body[:header_length]
    request = _parse_json(header_bytes)
    _check_keys(request, {"id", "inputs", "outputs", "parameters"}, "request")
    if not isinstance(request.get("id", ""), str):
        raise RequestError(400, "request 'id' must be a string")
    if not _encodable(request.get("id", "")):
        raise RequestError(400, "request 'id' is not valid Unicode (a lone surrogate such as \\ud800); Triton "
                                "cannot read it")
    if "\x00" in request.get("id", ""):  # Triton ends it there: "a\u0000b" came back as "a"
        raise RequestError(400, "request 'id' holds a NUL character (\\u0000), where Triton would cut it short")
    _check_request_parameters(request.get("parameters", {}))
    _check_outputs(request.get("outputs", []))
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"'inputs' must list exactly one tensor, named '{INPUT_NAME}'")
    binary = None if header_length is None else len(body) - header_length
    return _check_input(inputs[0], binary, limits) // 3


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object_pairs_hook: refuse a key given twice. Python keeps the last value, Triton's parser the first,
    so ``{"inputs": [huge shape], "inputs": [valid]}`` would be checked here and allocated there (it aborted the
    server)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(twice)
    return obj


def _encodable(text: str) -> bool:
    """True when ``text`` encodes as UTF-8: Python's json reads an escaped lone surrogate ("\\ud800"), Triton's
    parser refuses the request (a 500)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_json(data: bytes | bytearray) -> dict:
    try:
        # UTF-8 only (json.loads would also take UTF-16 or UTF-32 bytes, which Triton cannot parse: a 500 there)
        request = json.loads(data.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise RequestError(400, f"field '{_printable(str(exc))}' given twice in the request JSON") from None
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
        if kind is int and not 0 <= value < 1 << 64:  # Triton reads them as unsigned 64-bit integers
            raise RequestError(400, f"request parameter '{key}' must be 0 to 2**64 - 1")


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
        if "binary_data" in parameters and type(parameters["binary_data"]) is not bool:
            raise RequestError(400, "output parameter 'binary_data' must be true or false, got "
                                    f"{_printable(json.dumps(parameters['binary_data']))[:40]}")


def _check_input(tensor: dict, binary_bytes: int | None, limits: FrontLimits) -> int:
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
    return count


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
    if _leaf_types(data) != {int}:  # numpy reads [true, 1, ...] as integers 1, 1, ...; Triton refuses it (a 500)
        raise RequestError(400, "'data' must hold integers 0-255 (UINT8), not true or false")


def _leaf_types(data: list) -> set[type]:
    """The types of the values in ``data``, a list that numpy read as an evenly nested array."""
    level: list = data
    while True:
        kinds = set(map(type, level))
        if kinds != {list}:
            return kinds
        level = list(itertools.chain.from_iterable(level))


# -- command lines --------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line on stderr (``error: ...``, exit code 2), not usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "--size -5x10": argparse reads the value as an option and says only "expected one argument"
        option = re.fullmatch(r"argument (-[-\w]+)(?:/-[-\w]+)*: expected one argument", message)
        if option:
            message += f" (a value that starts with '-' is read as an option: write {option[1]}=VALUE)"
        print(f"error: {one_line(message, limit=500)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def port(free_allowed: bool = False):
    """An argparse ``type`` for a TCP port: 1-65535, or 0 (any free port) when ``free_allowed``."""
    return number(int, 0 if free_allowed else 1, 65535)


def listen_host(text: str) -> str:
    """An argparse ``type`` for ``--host``: an empty one (an unset ``$HOST`` in ``--host "$HOST"``) is refused, as
    the socket library reads it as every interface: 0.0.0.0 says that on purpose."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty host would listen on every interface; give 127.0.0.1 (this "
                                         "machine only) or 0.0.0.0 (all interfaces) on purpose")
    return text


def add_port_options(parser: argparse.ArgumentParser, metrics_default: int | None) -> None:
    """The ports, defined once for ``serving.serve`` and ``serving.triton_server``: ``--http-port``, ``--grpc-port``,
    ``--metrics-port`` (each 1-65535, or 0 for a free port that the start-up line names) and ``--no-metrics``.
    ``metrics_default`` None: metrics off unless ``--metrics-port`` is given."""
    parser.add_argument("--http-port", type=port(free_allowed=True), default=8000,
                        help="public (validated) HTTP port (default 8000; 0: any free port)")
    parser.add_argument("--grpc-port", type=port(free_allowed=True), default=None,
                        help="also open Triton's own gRPC on 127.0.0.1:PORT, without the front's checks "
                             "(0: any free port; default: off)")
    shown = "metrics off" if metrics_default is None else str(metrics_default)
    parser.add_argument("--metrics-port", type=port(free_allowed=True), default=metrics_default,
                        help=f"Prometheus metrics on 127.0.0.1:PORT (0: any free port; default: {shown})")
    parser.add_argument("--no-metrics", action="store_true",
                        help="no metrics port" + (" (the default here; overrides --metrics-port)"
                                                  if metrics_default is None else " (overrides --metrics-port)"))


def add_front_options(parser: argparse.ArgumentParser, body_default: str) -> None:
    """The validating front's options, defined once for ``serving.serve`` and ``serving.triton_server`` (same names,
    checks and defaults as :class:`FrontLimits`); ``body_default`` says what ``--max-body-mb`` defaults to."""
    seconds = number(float, 0, 24 * 3600, low_open=True)
    parser.add_argument("--max-body-mb", type=number(float, 0.001), default=None,
                        help=f"largest request body in MiB, at least 0.001 (default: {body_default})")
    parser.add_argument("--queue-size", type=number(int, 0, 10_000), default=FrontLimits.queue_size,
                        help="inference requests that may wait for the model; more get 503 (default %(default)s)")
    parser.add_argument("--deadline-s", type=seconds, default=FrontLimits.deadline_s,
                        help="answer each request within this many seconds of its arrival: one that would not "
                             "make it is refused (503) before it is computed (default %(default)g)")
    parser.add_argument("--request-timeout", type=seconds, default=FrontLimits.request_timeout_s,
                        help="seconds a client has to send a whole request (line, headers, body) from its first "
                             "byte; slower ones get 408 and are disconnected. Time waiting for the model or "
                             "computing does not count (default %(default)g)")
    parser.add_argument("--response-timeout", type=seconds, default=FrontLimits.response_timeout_s,
                        help="seconds a client has to read a whole response; a slower reader (e.g. a tiny TCP "
                             "receive window) is disconnected and its connection slot freed (default %(default)g)")


# -- the server -----------------------------------------------------------------------------------------------
