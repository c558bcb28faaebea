"""Pick and open a backend for an artifact: ``.engine`` -> TensorRT, ``.onnx`` -> ONNX Runtime, checkpoints ->
PyTorch. A checkpoint can also be run on ONNX Runtime: it is exported (and verified) once into a cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from runtime.backends.base import Backend, BackendUnavailableError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".safetensors", ".bin", ".ckpt"}


class ModelNotFoundError(FileNotFoundError):
    """The model/engine path does not exist."""


def backend_for_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    raise ValueError(f"{path}: cannot tell the backend from the extension {suffix!r}; use .engine, .onnx, "
                     f".pth or .safetensors, or pass backend= one of {BACKENDS}")


def cache_dir() -> Path:
    return Path(os.environ.get("BANET_CACHE", Path.home() / ".cache" / "banet-deploy"))


def onnx_for_checkpoint(weights: Path) -> Path:
    """Export ``weights`` to ONNX once (verified by the exporter) and reuse it, keyed by the file's sha256."""
    from banet.checkpoint import file_sha256, load_checkpoint
    from export.onnx_export import ExportOptions, export_onnx

    digest = file_sha256(weights)
    target = cache_dir() / f"{weights.stem}-{digest[:16]}.onnx"
    if not target.exists():
        log.info("exporting %s to %s for ONNX Runtime (once)", weights, target)
        loaded = load_checkpoint(weights)
        options = ExportOptions(verify_shapes=[(1, 64, 64), (2, 38, 50), (1, 30, 98)])
        export_onnx(loaded.model, target, options, loaded.sha256, weights.name, loaded.config)
    return target


def open_backend(path: Path, backend: str | None = None, **options) -> Backend:
    """Open ``path`` on ``backend`` (default: chosen from the extension)."""
    if not path.exists():
        raise ModelNotFoundError(f"{path}: model file not found")
    backend = backend or backend_for_path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    kind = backend_for_path(path)
    if backend == "torch":
        if kind != "torch":
            raise ValueError(f"{path}: the torch backend runs checkpoints (.pth/.safetensors), not {path.suffix}")
        from runtime.backends.torch_backend import TorchBackend

        return TorchBackend(path, **options)
    if backend == "onnxruntime":
        if kind == "tensorrt":
            raise ValueError(f"{path}: a TensorRT engine cannot run on ONNX Runtime; use its .onnx")
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_for_checkpoint(path) if kind == "torch" else path, **options)
    if kind != "tensorrt":
        raise ValueError(f"{path}: the tensorrt backend runs engines built by export/build_trt.py (.engine)")
    try:
        from runtime.backends.tensorrt import TensorRTBackend
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot run {path}: the TensorRT backend is unavailable ({exc}); install "
                                      "TensorRT and cuda-python (pip install 'banet-deploy[tensorrt]') on a GPU "
                                      "machine, or run the .onnx with backend='onnxruntime'") from exc
    return TensorRTBackend(path, **options)
