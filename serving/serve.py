"""Serve ``Deblurrer`` over HTTP with PyTriton (Triton Inference Server in-process) and dynamic batching.

    python -m serving.serve                              # embedded default model on http://127.0.0.1:8000
    python -m serving.serve --model engines/banet_default.onnx --host 0.0.0.0 --max-megapixels 24

Request: ``image`` UINT8 [N, H, W, 3] (BGR; KServe v2 JSON or binary tensor). Response: ``deblurred`` UINT8
[N, H, W, 3]. Same-shaped requests are batched by Triton's dynamic batcher.

The public HTTP port is a small validating front (:mod:`serving.front`) in this process; Triton itself
listens on a private loopback port. The bundled Triton aborts on some malformed requests (a JSON body that
declares a huge shape kills it with ``std::bad_alloc``), so every request is checked before Triton sees it:
declared shape, dtype, data length, image size (``--max-megapixels``, default 48 MP per image) and body size
(``--max-body-mb``). Refusals are 4xx with a one-line JSON error, never a traceback.

gRPC is off by default. ``--grpc-port`` turns on Triton's own gRPC endpoint, bound to 127.0.0.1 only whatever
``--host`` says: it gets no front (Triton's gRPC does check data length against the declared shape, and the
infer function still checks image size, but messages up to 2 GB are read and errors may carry tracebacks), so
it is for trusted local clients. Prometheus metrics are on 127.0.0.1 (``--metrics-port``) only.

Overload: inference requests wait for the model in one queue (``--queue-size``, default 16); a request that
cannot be answered within ``--deadline-s`` of its arrival (default 120 s, predicted from the model's measured
speed), or whose client hung up while it waited, is dropped before it is computed. Refusals are 503 with a
Retry-After header. A request must arrive whole (request line, headers and body) within ``--request-timeout``
of its first byte (default 60 s; waiting for the model and computing do not count): a client sending a byte
at a time, or never finishing its body, gets 408 and is disconnected, so it cannot hold a connection slot; a
client that does not read its whole answer within ``--response-timeout`` (default 60 s) is disconnected too.
Triton's own log goes to a file (``--triton-log``; ``--verbose`` prints it instead).
Start-up errors (model, ports, host, options) are one ``error:`` line and exit code 1 (2 for bad options);
Ctrl-C stops with one line and exit code 130, SIGTERM stops cleanly with exit code 0.
Needs the ``serve`` extra: pip install 'banet-deploy[serve]'.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from banet.cli_types import path_arg
from banet.outputs import file_in_the_way
from banet.shapes import MAX_BATCH
from banet.triton_marker import DEFAULT_MAX_PIXELS
from runtime.backends.base import BackendUnavailableError
from runtime.loading import BACKENDS
from runtime.selection import PRECISIONS
from serving.front import FrontServer, bind_problem, free_port, release_memory
from serving.request_rules import (
    BATCH_PIXELS,
    MB,
    FrontLimits,
    OneLineParser,
    add_front_options,
    add_port_options,
    error_tag,
    listen_host,
    number,
    one_line,
)

log = logging.getLogger(__name__)
#: After a request of at least this many pixels the model's kept working memory is handed back (~1.3 KB per pixel
#: for the default network, so ~340 MB here; re-allocating it costs the next request about 5%).
RELEASE_PIXELS = 512 * 512
MODEL_NAME = "banet"
LOOPBACK = "127.0.0.1"


@dataclass
class ServeConfig:
    """Where to listen and what to accept. Ports: ``http_port`` 0 picks a free one; ``grpc_port`` and
    ``metrics_port`` None turn them off, 0 picks a free one (:func:`bind_front` writes it here);
    ``triton_http_port`` None picks a free private port."""

    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int | None = None
    metrics_port: int | None = 8002
    max_batch: int = 8
    queue_delay_us: int = 2000
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body_bytes: int | None = None
    triton_http_port: int | None = None
    front: dict = field(default_factory=dict)  # further FrontLimits fields (timeouts, connection caps)
    queue_size: int = 16
    deadline_s: float = 120.0
    request_timeout_s: float = 60.0  # a request must be received whole within this (slow clients: 408)
    response_timeout_s: float = 60.0  # a response must be read whole within this (slow readers: disconnected)
    triton_log: Path | None = None  # Triton's log file; None: printed on stdout (PyTriton's way)

    def limits(self) -> FrontLimits:
        return FrontLimits(model=MODEL_NAME, max_pixels=self.max_pixels, max_body_bytes=self.max_body_bytes,
                           max_batch=self.max_batch, queue_size=self.queue_size, deadline_s=self.deadline_s,
                           request_timeout_s=self.request_timeout_s, response_timeout_s=self.response_timeout_s,
                           **self.front)


class ServeError(RuntimeError):
    """The server cannot start or stopped by itself; the message is one line for the user."""


class Server:
    """The running server: the validating front on the public port and Triton behind it."""

    def __init__(self, triton, front: FrontServer, log_path: Path | None = None) -> None:
        self.triton = triton
        self.front = front
        self.log_path = log_path  # Triton's log file, if it has one

    @property
    def url(self) -> str:
        host, port = self.front.server_address[:2]
        return f"{host}:{port}"

    def serve(self, poll_s: float = 1.0) -> None:
        """Block until Ctrl-C (KeyboardInterrupt) or another exception from a signal handler; raise ServeError if
        Triton stops by itself."""
        while self.triton.is_alive():
            time.sleep(poll_s)
        raise ServeError(f"the Triton server stopped by itself; see {self.log_path or 'its log above'}")

    def stop(self) -> None:
        """Stop the front first (no new requests), then Triton."""
        self.front.stop()
        self.triton.stop()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _prepare_environment() -> None:
    """PyTriton's Python-backend stub must load *this* interpreter's libpython, not the system one."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


def _check_port_free(port_number: int, what: str) -> None:
    """Raise ServeError if ``what`` (Triton's metrics or gRPC port on loopback) cannot be bound: Triton would
    otherwise fail late, with a page of log."""
    problem = bind_problem(LOOPBACK, port_number)
    if problem:
        raise ServeError(f"cannot use {what} port {LOOPBACK}:{port_number}: {problem}; pick another with "
                         f"--{what}-port")


def bind_front(config: ServeConfig) -> FrontServer:
    """The public socket, bound (not yet serving) before the model and Triton start, so a bad host or a busy port
    fails fast and in one line (:class:`ServeError`). Triton's private port is picked and its metrics and gRPC
    ports are checked here too; a metrics or gRPC port of 0 becomes a free one, written into ``config``."""
    triton_port = config.triton_http_port or free_port()
    try:
        front = FrontServer((config.host, config.http_port), config.limits(), (LOOPBACK, triton_port))
    except (OSError, OverflowError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServeError(f"cannot listen on {config.host}:{config.http_port}: {one_line(reason)}") from None
    try:
        taken = {triton_port, front.port}
        for what in ("metrics", "grpc"):
            number_ = getattr(config, f"{what}_port")
            if number_ == 0:  # any free port: the start-up line names the one picked
                number_ = free_port(LOOPBACK, taken)
                setattr(config, f"{what}_port", number_)
            if number_ is not None:
                _check_port_free(number_, what)
                taken.add(number_)
    except BaseException:
        front.server_close()
        raise
    return front


# -- the infer function ---------------------------------------------------------------------------------------
def check_images(images: np.ndarray, max_pixels: int) -> None:
    """The checks the front makes, again, for requests that reach Triton another way (gRPC)."""
    from banet.processing import ImageFormatError
    from runtime.images import MIN_SIDE

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ImageFormatError(f"expected UINT8 images of shape [H, W, 3], got {images.dtype} "
                               f"{list(images.shape[1:])}")
    height, width = images.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise ImageFormatError(f"image of {height}x{width} pixels is too small to deblur (at least "
                               f"{MIN_SIDE}x{MIN_SIDE})")
    if height * width > max_pixels:
        raise ImageFormatError(f"image of {height}x{width} pixels is over the server's limit of "
                               f"{max_pixels / 1e6:.1f} MP")


def pixel_chunks(images: np.ndarray, max_pixels: int) -> Iterator[np.ndarray]:
    """Split a dynamic batch so one ``deblur_batch`` call holds at most ``max_pixels`` pixels (at least 1 image)."""
    per_call = max(1, max_pixels // max(1, images.shape[1] * images.shape[2]))
    for start in range(0, len(images), per_call):
        yield images[start:start + per_call]


def describe_failure(exc: BaseException) -> str:
    """An exception -> one tagged line for the front: 400 for a bad image, 500 otherwise (logged here)."""
    from banet.processing import ImageFormatError, NonFiniteOutputError

    if isinstance(exc, NonFiniteOutputError):
        log.error("inference failed: %s", exc)
        return error_tag(500, exc)
    if isinstance(exc, (ImageFormatError, ValueError)):
        return error_tag(400, exc)
    log.error("inference failed", exc_info=exc)
    return error_tag(500, "internal error while deblurring (see the server log)")


def make_infer(deblurrer, max_pixels: int = DEFAULT_MAX_PIXELS, batch_pixels: int = BATCH_PIXELS):
    """The batched inference function PyTriton calls; the model gets at most ``batch_pixels`` pixels per call (or
    one image), which bounds peak memory. Every failure leaves as one tagged line: PyTriton wraps it in a
    traceback, which the front strips (see :func:`serving.request_rules.clean_upstream_error`)."""
    from pytriton.decorators import batch
    from pytriton.exceptions import PyTritonBadParameterError

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        try:
            check_images(image, max_pixels)
            out: list[np.ndarray] = []
            for chunk in pixel_chunks(image, min(max_pixels, batch_pixels)):
                out.extend(deblurrer.deblur_batch(list(chunk)))
            return {"deblurred": np.stack(out)}
        except Exception as exc:  # noqa: BLE001 (every failure becomes one line for the client)
            raise PyTritonBadParameterError(describe_failure(exc)) from None
        finally:
            if image.size // 3 >= RELEASE_PIXELS:  # the model's working memory for it would otherwise stay mapped
                deblurrer.release_memory()
                release_memory()

    return infer


# -- start-up -------------------------------------------------------------------------------------------------
def _start_triton(deblurrer, config: ServeConfig, triton_port: int):
    _prepare_environment()
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise BackendUnavailableError("PyTriton is not installed: pip install 'banet-deploy[serve]'") from exc
    grpc = {"allow_grpc": False} if config.grpc_port is None else {"grpc_address": LOOPBACK,
                                                                    "grpc_port": config.grpc_port}
    metrics = {"allow_metrics": False} if config.metrics_port is None else {"metrics_port": config.metrics_port}
    log_file = {} if config.triton_log is None else {"log_file": config.triton_log}
    triton = Triton(config=TritonConfig(http_address=LOOPBACK, http_port=triton_port, log_verbose=0, **grpc,
                                        **metrics, **log_file))
    triton.bind(model_name=MODEL_NAME, infer_func=make_infer(deblurrer, config.max_pixels,
                                                             config.limits().batch_pixels),
                inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name="deblurred", dtype=np.uint8, shape=(-1, -1, 3))],
                config=ModelConfig(max_batch_size=config.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us)),
                strict=True)
    if config.triton_log is not None:
        _quiet_console(triton)
    try:
        triton.run()
    except BaseException:
        triton.stop()
        raise
    return triton


def _quiet_console(triton) -> None:
    """With a log file, tritonserver still prints a few lines (NVML and DCGM probes on a CPU machine, signals) that
    PyTriton relays to our stdout; it keeps them in memory as well (``logs()``), so turn the relay off. This is
    PyTriton's private API (2.x): left alone if it has moved."""
    try:
        triton._initialize_server()
        triton._triton_server._verbose = False
    except AttributeError:
        log.debug("PyTriton's console relay not found; tritonserver may print on stdout")


def start(deblurrer, config: ServeConfig, front: FrontServer | None = None) -> Server:
    """Start Triton on a private loopback port and the validating front on ``config.host:http_port``. The
    public socket is bound first (or given: ``front`` from :func:`bind_front`); a bad host, a busy port or a
    Triton that fails raise :class:`ServeError`."""
    if front is None:
        front = bind_front(config)
    triton_port = front.upstream[1]
    try:
        try:
            triton = _start_triton(deblurrer, config, triton_port)
        except (BackendUnavailableError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 (PyTriton's errors and tritonserver's failures, as one line)
            log.debug("Triton failed to start", exc_info=True)
            where = f"; see {config.triton_log}" if config.triton_log else ""
            raise ServeError(f"the Triton server did not start: {one_line(exc)}{where}") from None
    except BaseException:
        front.server_close()
        raise
    front.start()
    metrics = "" if config.metrics_port is None else f"; metrics on http://{LOOPBACK}:{config.metrics_port}/metrics"
    grpc = "" if config.grpc_port is None else f"; unvalidated gRPC on {LOOPBACK}:{config.grpc_port}"
    log.info("serving %s on http://%s:%d (images up to %.1f MP)%s%s", MODEL_NAME, config.host, front.port,
             config.max_pixels / 1e6, metrics, grpc)
    return Server(triton, front, config.triton_log)


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m serving.serve", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=path_arg, default=None,
                        help="checkpoint, ONNX or engine (default: embedded model)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default=None,
                        help="force a backend; auto: the fastest installed for the file (default: from the file)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="int8: the model's INT8 file on ONNX Runtime or OpenVINO, within the 0.3 dB budget; "
                             "bf16: an FP32 .onnx on OpenVINO in bfloat16 (default: the file as it is)")
    parser.add_argument("--host", type=listen_host, default=LOOPBACK,
                        help="address the HTTP port listens on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    add_port_options(parser, metrics_default=8002)
    parser.add_argument("--max-batch", type=number(int, 1, MAX_BATCH), default=8,
                        help=f"largest dynamic batch, 1 to {MAX_BATCH} (default 8)")
    parser.add_argument("--max-megapixels", type=number(float, 4e-6), default=DEFAULT_MAX_PIXELS / 1e6,
                        help="largest image accepted, in millions of pixels (default %(default).0f)")
    add_front_options(parser, body_default="one image of --max-megapixels, plus 1 MiB")
    parser.add_argument("--triton-log", type=path_arg, default=None,
                        help="file for Triton's log (default: triton.log in a new temporary folder, named at start)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print Triton's and PyTriton's log on the console instead of a file")
    return parser


class _Terminated(BaseException):
    """SIGTERM (docker stop, systemd): stop cleanly, exit code 0. A BaseException, like KeyboardInterrupt, so no
    ``except Exception`` on the way (start-up error reporting) mistakes it for a failure."""


def _stop_on_signals() -> None:
    """SIGINT raises KeyboardInterrupt even when started in the background (where a shell leaves SIGINT ignored),
    SIGTERM raises :class:`_Terminated`: either way the server is stopped, otherwise the Triton child process
    would outlive us."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    def terminate(signum, frame) -> None:
        raise _Terminated

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, terminate)


@contextlib.contextmanager
def _signals_held(pending: list[int]) -> Iterator[None]:
    """While Triton starts, SIGINT and SIGTERM are noted in ``pending`` instead of raised: raised inside PyTriton's
    start-up (gevent), they printed a traceback and a bare timestamp before the one line. The caller raises the
    first one noted once the server is up, and stops it."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_logs(verbose: bool, log_file: Path | None) -> Path | None:
    """PyTriton's chatter only with --verbose; returns the folder made for Triton's log file (None with --verbose
    or a --triton-log FILE of the user's)."""
    if verbose:
        return None
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    return None if log_file is not None else Path(tempfile.mkdtemp(prefix="banet-serve-"))


def _config(args: argparse.Namespace, log_folder: Path | None) -> ServeConfig:
    max_pixels = int(args.max_megapixels * 1e6)
    triton_log = args.triton_log if args.triton_log is not None else (log_folder / "triton.log" if log_folder
                                                                      else None)
    return ServeConfig(args.host, args.http_port, args.grpc_port, None if args.no_metrics else args.metrics_port,
                       args.max_batch, max_pixels=max_pixels,
                       max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * MB),
                       queue_size=args.queue_size, deadline_s=args.deadline_s,
                       request_timeout_s=args.request_timeout, response_timeout_s=args.response_timeout,
                       triton_log=triton_log)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.serve``: 0 after SIGTERM, 130 after Ctrl-C, 1 with one ``error:`` line otherwise."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # stderr: errors only
    _stop_on_signals()
    from banet.errors import CheckpointError, first_line
    from runtime import Deblurrer
    from runtime.backends.base import IncompatibleArtifactError

    if args.triton_log is not None and not args.triton_log.parent.is_dir():
        print(f"error: --triton-log {args.triton_log}: {file_in_the_way(args.triton_log) or 'no such folder'}",
              file=sys.stderr)
        return 1
    if importlib.util.find_spec("pytriton") is None:  # before the model loads (it said "Deblurrer ready" first)
        print("error: PyTriton is not installed: pip install 'banet-deploy[serve]'", file=sys.stderr)
        return 1
    if args.triton_log is not None and args.triton_log.is_dir():  # Triton's log was lost, "see /tmp" a folder
        print(f"error: --triton-log {args.triton_log} is a folder; give a file name for Triton's log (e.g. "
              f"{args.triton_log / 'triton.log'})", file=sys.stderr)
        return 1
    log_folder = _quiet_logs(args.verbose, args.triton_log)
    config = _config(args, log_folder)
    code = 1
    try:
        front = bind_front(config)
        with Deblurrer(args.model, backend=args.backend, precision=args.precision,
                       max_pixels=config.max_pixels) as deblurrer:
            log.info("model: %s on %s", deblurrer.model_path, deblurrer.backend.describe())
            pending: list[int] = []
            with _signals_held(pending):
                server = start(deblurrer, config, front)
            try:
                if pending:  # stopped while Triton started: now, cleanly
                    raise KeyboardInterrupt if pending[0] == signal.SIGINT else _Terminated
                if config.triton_log is not None:
                    log.info("Triton's log: %s%s", config.triton_log, "" if args.triton_log else
                             " (removed when the server stops cleanly; --triton-log FILE keeps one)")
                server.serve()
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
                    signal.signal(signum, signal.SIG_IGN)
                server.stop()
    except (ServeError, OSError, ValueError, CheckpointError, BackendUnavailableError,
            IncompatibleArtifactError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; server stopped", file=sys.stderr)
        code = 130
    except _Terminated:
        log.info("stopped")
        code = 0
    except Exception as exc:  # noqa: BLE001 (an inference library's own error at load: one line, never a traceback)
        log.debug("start-up failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
    if log_folder is not None and (code != 1 or not config.triton_log.exists()):  # kept if an error points to it
        shutil.rmtree(log_folder, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
