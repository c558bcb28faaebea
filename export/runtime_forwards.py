"""Forwards (an NCHW float32 batch -> the raw network output) through the runtime's own backends, importing no torch.

The one way the export checks, INT8 calibration, the held-out measurements and the drift report run an ONNX file on
ONNX Runtime's CPU provider or on OpenVINO: what they measure is what ``Deblurrer`` runs.
"""

from __future__ import annotations

from pathlib import Path

from export.parity import Forward


def onnxruntime_forward(path: Path, threads: int | None = None) -> Forward:
    """ONNX Runtime's CPU provider on an ONNX file, through the runtime's one way to open a session (metadata not
    needed: the exporter verifies a file before writing it)."""
    from runtime.backends.onnxruntime_backend import open_session, session_forward

    return session_forward(open_session(path, ["CPUExecutionProvider"], threads))


def openvino_forward(path: Path, threads: int | None = None, static: bool = True, **options) -> Forward:
    """The runtime's OpenVINO backend on ``path``: compiled per input shape (``Deblurrer(backend="openvino")``'s
    default) or once for dynamic shapes (``static=False``; what an app compiling the file itself gets); ``options``
    go to :class:`~runtime.backends.openvino_backend.OpenVinoBackend` (``inference_precision="bf16"``,
    ``compile_cache=None``). Raises ``BackendUnavailableError`` where OpenVINO or the precision is not available."""
    from runtime.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(path, threads=threads, static=static, **options).run
