"""Serve ``Deblurrer`` over HTTP and gRPC with PyTriton (Triton Inference Server in-process), with dynamic batching.

    python -m runtime.serve                              # embedded default model, 127.0.0.1:8000 (HTTP) / 8001 (gRPC)
    python -m runtime.serve --model engines/banet_default.onnx --host 0.0.0.0

Request: ``image`` UINT8 [H, W, 3] (BGR). Response: ``deblurred`` UINT8 [H, W, 3]. Same-shaped requests are
batched by Triton's dynamic batcher. A bad request (wrong shape, dtype or an empty image) gets an error response
and the server keeps serving. Needs the ``serve`` extra: pip install 'banet-deploy[serve]'.
"""

from __future__ import annotations

import argparse
import logging
import os
import sysconfig
from dataclasses import dataclass

import numpy as np

from runtime.backends.base import BackendUnavailableError

log = logging.getLogger(__name__)
MODEL_NAME = "banet"


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    queue_delay_us: int = 2000


def _prepare_environment() -> None:
    """PyTriton's Python-backend stub must load *this* interpreter's libpython, not the system one."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


def make_infer(deblurrer):
    """The batched inference function PyTriton calls: validates each request, runs the Deblurrer."""
    from pytriton.decorators import batch
    from pytriton.exceptions import PyTritonBadParameterError

    from banet.processing import ImageFormatError, NonFiniteOutputError

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        if image.ndim != 4 or image.shape[-1] != 3:
            raise PyTritonBadParameterError(f"expected image of shape [H, W, 3], got {list(image.shape[1:])}")
        try:
            out = deblurrer.deblur_batch(list(image))
        except (ImageFormatError, NonFiniteOutputError, ValueError) as exc:
            raise PyTritonBadParameterError(str(exc)) from exc
        return {"deblurred": np.stack(out)}

    return infer


def start(deblurrer, config: ServeConfig):
    """Start Triton with the model bound and return the running ``Triton`` object (call ``.stop()``)."""
    _prepare_environment()
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise BackendUnavailableError("PyTriton is not installed: pip install 'banet-deploy[serve]'") from exc
    triton = Triton(config=TritonConfig(http_address=config.host, http_port=config.http_port,
                                        grpc_address=config.host, grpc_port=config.grpc_port,
                                        metrics_port=config.metrics_port, log_verbose=0))
    triton.bind(model_name=MODEL_NAME, infer_func=make_infer(deblurrer),
                inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name="deblurred", dtype=np.uint8, shape=(-1, -1, 3))],
                config=ModelConfig(max_batch_size=config.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us)),
                strict=True)
    triton.run()
    log.info("serving %s on http://%s:%d and grpc %s:%d", MODEL_NAME, config.host, config.http_port, config.host,
             config.grpc_port)
    return triton


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint, ONNX or engine (default: embedded model)")
    parser.add_argument("--backend", default=None, help="torch, onnxruntime or tensorrt (default: from the file)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from runtime import Deblurrer

    config = ServeConfig(args.host, args.http_port, args.grpc_port, args.metrics_port, args.max_batch)
    with Deblurrer(args.model, backend=args.backend) as deblurrer:
        triton = start(deblurrer, config)
        try:
            triton.serve()
        finally:
            triton.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
