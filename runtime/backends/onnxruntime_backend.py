"""ONNX Runtime backend: an exported ``.onnx`` on the best available execution provider."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from banet.metadata import read_onnx_metadata
from banet.onnxruntime_options import session_options
from runtime.backends.base import Backend, BackendUnavailableError, ShapeCache, ShapeLimits, check_threads

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
                 profile_prefix: str | None = None, fixed_dims: dict[str, int] | None = None):
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
    for dim, value in (fixed_dims or {}).items():
        options.add_free_dimension_override_by_name(dim, value)
    return ort.InferenceSession(str(path), options, providers=providers)


def session_forward(session):
    """``batch -> first output`` for a session, feeding its (single) input by name."""
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    return run


#: The exporter's names for the input's free dimensions (NCHW), which a static session fixes.
FREE_DIMS = ("batch", None, "height", "width")


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file exported by ``export/to_onnx.py`` (its metadata gives the conventions).

    ``static=True`` opens one session per input shape with the free dimensions fixed (ONNX Runtime then plans
    memory and picks kernels for that shape), kept in a bounded cache of ``shape_cache`` shapes; the default is
    one dynamic-shape session.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 static: bool = False, shape_cache: int = 4) -> None:
        check_threads(threads)
        threads = int(threads) if threads else None  # numpy integers too
        import_onnxruntime()
        metadata = read_onnx_metadata(path)
        self.path, self.threads, self.static = Path(path), threads, static
        self._requested = providers
        self._sessions = ShapeCache(self._open, shape_cache)
        dynamic = self._open(())  # a model ONNX Runtime cannot load fails here, not at the first image
        self.providers = dynamic[0].get_providers()
        self._dynamic = None if static else dynamic
        super().__init__(metadata, limits_from_metadata(metadata))

    def _open(self, shape: tuple[int, ...]):
        """(session, forward function) for a new session; ``shape`` () keeps the free dimensions free."""
        fixed = {dim: value for dim, value in zip(FREE_DIMS, shape) if dim}
        session = open_session(self.path, self._requested, self.threads, fixed_dims=fixed)
        return session, session_forward(session)

    @property
    def session_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes with a static session open now, least recently used first."""
        return self._sessions.shapes()

    def run(self, batch: np.ndarray) -> np.ndarray:
        session, forward = self._dynamic or self._sessions.get(tuple(batch.shape))
        return forward(batch)

    def close(self) -> None:
        self._dynamic = None
        self._sessions.clear()

    def describe(self) -> str:
        mode = f", static shapes, cache {self._sessions.size}" if self.static else ""
        return f"onnxruntime {self.providers[0]} ({self.metadata.precision}{mode})"
