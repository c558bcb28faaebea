"""ONNX Runtime backend: an exported ``.onnx`` on the best available execution provider."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from banet.metadata import read_onnx_metadata
from banet.onnxruntime_options import session_options
from runtime.backends.base import Backend, BackendUnavailableError, ShapeLimits

log = logging.getLogger(__name__)

#: Preference order; the first one the installed onnxruntime offers is used.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def limits_from_metadata(metadata) -> ShapeLimits:
    """Shape limits an exported model declares (and was verified for)."""
    if metadata.static_shape is not None:
        n, h, w = metadata.static_shape
        return ShapeLimits(min_hw=(h, w), max_hw=(h, w), max_batch=n, static_shape=(n, h, w), fixed_batch=n)
    batch = metadata.extra.get("batch", "dynamic")
    fixed = int(batch) if batch.isdigit() else None
    return ShapeLimits(min_hw=(metadata.min_size, metadata.min_size), max_hw=(metadata.max_size, metadata.max_size),
                       max_batch=fixed or 1 << 30, fixed_batch=fixed)


def import_onnxruntime():
    """The ``onnxruntime`` module, or :class:`BackendUnavailableError` naming the extra to install."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime is not installed: pip install 'banet-deploy[cpu]' "
                                      "(or [gpu] for onnxruntime-gpu)") from exc
    return ort


def open_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 profile_prefix: str | None = None):
    """The one way this project opens an ONNX Runtime session (the backend, export and INT8 verification, drift,
    benchmarks): the best available providers by default, options from
    :func:`banet.onnxruntime_options.session_options` (quiet logging, ``threads`` intra-op threads, CPU arena off
    for predictable memory).
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in PROVIDER_PREFERENCE if p in available]
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendUnavailableError(f"execution provider(s) {missing} not available in this onnxruntime "
                                      f"(available: {available})")
    options = session_options(ort, threads, profile_prefix)
    return ort.InferenceSession(str(path), options, providers=providers)


def session_forward(session):
    """``batch -> first output`` for a session, feeding its (single) input by name."""
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    return run


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file exported by ``export/to_onnx.py`` (its metadata gives the conventions)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        import_onnxruntime()
        metadata = read_onnx_metadata(path)
        self.session = open_session(path, providers, threads)
        self._run = session_forward(self.session)
        self.providers = self.session.get_providers()
        super().__init__(metadata, limits_from_metadata(metadata))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)

    def close(self) -> None:
        self.session = None
        self._run = None

    def describe(self) -> str:
        return f"onnxruntime {self.providers[0]} ({self.metadata.precision})"
