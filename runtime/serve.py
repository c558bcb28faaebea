"""Serve ``Deblurrer`` over HTTP with PyTriton (Triton Inference Server in-process) and dynamic batching.

    python -m runtime.serve                              # embedded default model on http://127.0.0.1:8000
    python -m runtime.serve --model engines/banet_default.onnx --host 0.0.0.0 --max-megapixels 24

Request: ``image`` UINT8 [N, H, W, 3] (BGR; KServe v2 JSON or binary tensor). Response: ``deblurred`` UINT8
[N, H, W, 3]. Same-shaped requests are batched by Triton's dynamic batcher.

The public HTTP port is a small validating front (:mod:`runtime.serve_front`) in this process; Triton itself
listens on a private loopback port. The bundled Triton aborts on some malformed requests (a JSON body that
declares a huge shape kills it with ``std::bad_alloc``), so every request is checked before Triton sees it:
declared shape, dtype, data length, image size (``--max-megapixels``, default 48 MP per image) and body size
(``--max-body-mb``). Refusals are 4xx with a one-line JSON error, never a traceback.

gRPC is off by default. ``--grpc-port`` turns on Triton's own gRPC endpoint, bound to 127.0.0.1 only whatever
``--host`` says: it gets no front (Triton's gRPC does check data length against the declared shape, and the
infer function still checks image size, but messages up to 2 GB are read and errors may carry tracebacks), so
it is for trusted local clients. Prometheus metrics are on 127.0.0.1 (``--metrics-port``) only.
Needs the ``serve`` extra: pip install 'banet-deploy[serve]'.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from runtime.backends.base import BackendUnavailableError
from runtime.serve_front import FrontServer, start_front
from runtime.serve_requests import DEFAULT_MAX_PIXELS, MB, FrontLimits, error_tag

log = logging.getLogger(__name__)
MODEL_NAME = "banet"
LOOPBACK = "127.0.0.1"


@dataclass
class ServeConfig:
    """Where to listen and what to accept. Ports: ``http_port`` 0 picks a free one; ``grpc_port`` and
    ``metrics_port`` None turn them off; ``triton_http_port`` None picks a free private port."""

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

    def limits(self) -> FrontLimits:
        return FrontLimits(model=MODEL_NAME, max_pixels=self.max_pixels, max_body_bytes=self.max_body_bytes,
                           max_batch=self.max_batch, **self.front)


class Server:
    """The running server: the validating front on the public port and Triton behind it."""

    def __init__(self, triton, front: FrontServer) -> None:
        self.triton = triton
        self.front = front

    @property
    def url(self) -> str:
        host, port = self.front.server_address[:2]
        return f"{host}:{port}"

    def serve(self) -> None:
        """Block until Triton stops (or Ctrl-C)."""
        self.triton.serve()

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


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


def make_infer(deblurrer, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The batched inference function PyTriton calls. Every failure leaves as one tagged line: PyTriton wraps it in
    a traceback, which the front strips (see :func:`runtime.serve_requests.clean_upstream_error`)."""
    from pytriton.decorators import batch
    from pytriton.exceptions import PyTritonBadParameterError

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        try:
            check_images(image, max_pixels)
            out: list[np.ndarray] = []
            for chunk in pixel_chunks(image, max_pixels):
                out.extend(deblurrer.deblur_batch(list(chunk)))
            return {"deblurred": np.stack(out)}
        except Exception as exc:  # noqa: BLE001 (every failure becomes one line for the client)
            raise PyTritonBadParameterError(describe_failure(exc)) from None

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
    triton = Triton(config=TritonConfig(http_address=LOOPBACK, http_port=triton_port, log_verbose=0, **grpc,
                                        **metrics))
    triton.bind(model_name=MODEL_NAME, infer_func=make_infer(deblurrer, config.max_pixels),
                inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name="deblurred", dtype=np.uint8, shape=(-1, -1, 3))],
                config=ModelConfig(max_batch_size=config.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us)),
                strict=True)
    triton.run()
    return triton


def start(deblurrer, config: ServeConfig) -> Server:
    """Start Triton on a private loopback port and the validating front on ``config.host:http_port``."""
    triton_port = config.triton_http_port or _free_port()
    triton = _start_triton(deblurrer, config, triton_port)
    try:
        front = start_front(config.host, config.http_port, config.limits(), (LOOPBACK, triton_port))
    except BaseException:
        triton.stop()
        raise
    log.info("serving %s on http://%s:%d (images up to %.1f MP)%s", MODEL_NAME, config.host, front.port,
             config.max_pixels / 1e6, "" if config.grpc_port is None else
             f"; unvalidated gRPC on {LOOPBACK}:{config.grpc_port}")
    return Server(triton, front)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint, ONNX or engine (default: embedded model)")
    parser.add_argument("--backend", default=None, help="torch, onnxruntime or tensorrt (default: from the file)")
    parser.add_argument("--host", default=LOOPBACK,
                        help="address the HTTP port listens on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    parser.add_argument("--http-port", type=int, default=8000, help="public HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also open Triton's gRPC on 127.0.0.1:PORT, without the request checks (default: off)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics on 127.0.0.1 (default 8002)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch (default 8)")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="largest image accepted, in millions of pixels (default %(default).0f)")
    parser.add_argument("--max-body-mb", type=float, default=None,
                        help="largest request body in MiB (default: one image of --max-megapixels, plus 1 MiB)")
    return parser


def _stop_on_signals() -> None:
    """SIGTERM (docker stop, systemd) and SIGINT stop the server cleanly, even when started in the background
    (where a shell leaves SIGINT ignored); otherwise the Triton child process would outlive us."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _stop_on_signals()
    from runtime import Deblurrer

    config = ServeConfig(args.host, args.http_port, args.grpc_port, args.metrics_port, args.max_batch,
                         max_pixels=int(args.max_megapixels * 1e6),
                         max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * MB))
    with Deblurrer(args.model, backend=args.backend) as deblurrer:
        server = start(deblurrer, config)
        try:
            server.serve()
        except KeyboardInterrupt:
            log.info("stopping")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
