"""Pick and open a backend for an artifact: ``.engine`` -> TensorRT, ``.onnx`` -> ONNX Runtime, checkpoints ->
PyTorch.

The runtime runs ``.onnx`` and ``.engine`` files itself. Checkpoints need the model layer (torch), which sits
above the runtime: it registers its openers under the entry point group ``banet_deploy.checkpoint_backends``
(``torch``: :mod:`banet.torch_backend`; ``onnxruntime``: :mod:`export.checkpoint_onnx`, an export into the cache),
so the runtime finds them without importing them by name, and an app that ships only an ONNX or an engine never
loads PyTorch.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path

from banet.defaults import EXPORT_INSTALL
from banet.errors import OptionError
from runtime.backends.base import Backend, BackendUnavailableError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".safetensors", ".bin", ".ckpt"}
CHECKPOINT_BACKENDS = "banet_deploy.checkpoint_backends"


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
    if suffix == ".ort":
        raise OptionError(f"{path}: an ORT Mobile app graph (export/to_app.py: uint8 images in and out) runs on ONNX "
                         "Runtime itself; give the runtime the network .onnx it was made from")
    raise OptionError(f"{path}: cannot tell the backend from the extension {suffix!r}; use .engine, .onnx, "
                     f".pth or .safetensors, or name the backend (backend=, --backend: one of {', '.join(BACKENDS)})")


def checkpoint_opener(backend: str):
    """The registered callable ``(path, **options) -> Backend`` that runs a checkpoint on ``backend``."""
    found = [e for e in entry_points(group=CHECKPOINT_BACKENDS) if e.name == backend]
    if not found:
        raise BackendUnavailableError(
            f"no opener for checkpoints on {backend!r} is registered (entry point group {CHECKPOINT_BACKENDS}); "
            f"install banet-deploy with its model layer: {EXPORT_INSTALL} (or pip install -e '.[export,cpu]' from "
            "a checkout)")
    try:
        return found[0].load()
    except ImportError as exc:  # one line, not the import's chained traceback
        raise BackendUnavailableError(
            f"running a checkpoint needs PyTorch and the model layer ({exc}); install them (CPU build): "
            f"{EXPORT_INSTALL}; or run an exported .onnx / .engine instead (Deblurrer() with no model runs the "
            "default model's shipped ONNX)") from None


def _how_to_make(path: Path) -> str:
    """What makes a missing model file of ``path``'s kind, for the "not found" line."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return f" (export one: python export/to_onnx.py --weights CHECKPOINT --output {path})"
    if suffix in (".engine", ".plan", ".trt"):
        return f" (build one: python export/build_trt.py --fp16 --output {path})"
    return ""


def open_backend(path: Path, backend: str | None = None, **options) -> Backend:
    """Open ``path`` on ``backend`` (default: chosen from the extension)."""
    if not path.exists():
        raise ModelNotFoundError(f"{path}: model file not found{_how_to_make(path)}")
    if path.is_dir():  # named before its (missing) extension is: "cannot tell the backend" would mislead
        raise ModelNotFoundError(f"{path} is a folder, not a model file; give the .onnx, .engine or "
                                 ".pth/.safetensors file in it")
    backend = backend or backend_for_path(path)
    if backend not in BACKENDS:
        raise OptionError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    kind = backend_for_path(path)
    if kind == "torch":
        if backend == "tensorrt":
            raise OptionError(f"{path}: the tensorrt backend runs engines built by export/build_trt.py (.engine)")
        return checkpoint_opener(backend)(path, **options)
    if backend == "torch":
        raise OptionError(f"{path}: the torch backend runs checkpoints (.pth/.safetensors), not {path.suffix}")
    if backend == "onnxruntime":
        if kind == "tensorrt":
            raise OptionError(f"{path}: a TensorRT engine cannot run on ONNX Runtime; use its .onnx")
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, **options)
    if backend == "openvino":
        if kind != "onnxruntime":
            raise OptionError(f"{path}: the openvino backend runs an exported .onnx, not {path.suffix}")
        from runtime.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, **options)
    if kind != "tensorrt":
        raise OptionError(f"{path}: the tensorrt backend runs engines built by export/build_trt.py (.engine)")
    try:
        from runtime.backends.tensorrt import TensorRTBackend
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot run {path}: the TensorRT backend is unavailable ({exc}); install "
                                      "TensorRT and cuda-python (pip install 'banet-deploy[tensorrt]') on a GPU "
                                      "machine, or run the .onnx with backend='onnxruntime'") from exc
    return TensorRTBackend(path, **options)
