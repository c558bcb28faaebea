"""ONNX Runtime backend: an exported ``.onnx`` on the best available execution provider.

On a GPU (onnxruntime-gpu's ``CUDAExecutionProvider``) inputs and outputs go through IO binding: device buffers
kept per input shape, one copy in and one out per call. With fixed input shapes (``static=True``, or a
static-shape export) the CUDA provider also captures each session's run in a CUDA graph (its
``enable_cuda_graph`` option) and replays it, which needs the input bound at the same device address every run;
a session that cannot be captured (a node ONNX Runtime placed on the CPU) falls back to IO binding alone, logged.
Not measured on a GPU by this project yet (no onnxruntime-gpu on the lent machines): README, GPU section.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from banet.errors import OptionError
from banet.metadata import read_onnx_metadata
from banet.onnxruntime_options import session_options
from banet.processing import padded_size
from runtime.backends.base import (
    Backend,
    BackendUnavailableError,
    ShapeCache,
    ShapeLimits,
    check_threads,
    check_tristate,
)

log = logging.getLogger(__name__)

#: Preference order; the first one the installed onnxruntime offers is used.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: Providers whose tensors live in CUDA memory (IO binding keeps inputs and outputs there).
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def provider_name(provider) -> str:
    """The name of a provider given as a name or as ``(name, options)``."""
    return provider[0] if isinstance(provider, tuple) else provider


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
    :func:`banet.onnxruntime_options.session_options` (quiet logging, ``threads`` intra-op threads, on a CPU the
    memory arena on and the memory pattern off: faster, and a lower peak).
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in PROVIDER_PREFERENCE if p in available]
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        raise BackendUnavailableError(f"execution provider(s) {missing} not available in this onnxruntime "
                                      f"(available: {available})")
    on_cpu = not providers or provider_name(providers[0]) == "CPUExecutionProvider"
    options = session_options(ort, threads, profile_prefix, on_cpu=on_cpu)
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


def binding_plan(providers: list[str], fixed_shapes: bool, io_binding: bool | None = None,
                 cuda_graph: bool | None = None) -> tuple[str | None, bool]:
    """(device for IO binding or None, CUDA graphs on) for a session on ``providers`` (the active ones, first
    first).

    IO binding engages by default when a CUDA provider runs the model (``io_binding=True`` forces it, on the
    CPU too, where it is the same path with host buffers); CUDA graphs by default when the CUDA provider runs it
    and the input shapes are fixed, which a graph needs. An explicit request that cannot be met is one
    :class:`OptionError` line.
    """
    io_binding, cuda_graph = check_tristate("io_binding", io_binding), check_tristate("cuda_graph", cuda_graph)
    first = provider_name(providers[0]) if providers else None
    on_cuda = first in CUDA_PROVIDERS
    if cuda_graph and first != "CUDAExecutionProvider":
        raise OptionError(f"cuda_graph=True needs ONNX Runtime's CUDAExecutionProvider (pip install "
                          f"'banet-deploy[gpu]' on a GPU machine); this session runs on {first}")
    if cuda_graph and not fixed_shapes:
        raise OptionError("cuda_graph=True needs fixed input shapes: static=True (one session per input shape) "
                          "or a static-shape export")
    if cuda_graph and io_binding is False:
        raise OptionError("cuda_graph=True needs io_binding (a graph reads its input from one device address)")
    graphs = (first == "CUDAExecutionProvider" and fixed_shapes) if cuda_graph is None else cuda_graph
    bind = graphs or (on_cuda if io_binding is None else io_binding)
    return ("cuda" if on_cuda else "cpu") if bind else None, graphs


#: ONNX Runtime's execution providers that run a session on an NVIDIA GPU (their ``device_id`` option names it).
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def gpu_of(session) -> int | None:
    """The GPU a session runs on (its first provider's ``device_id``), None when its first provider is not a GPU
    one (:data:`GPU_PROVIDERS`)."""
    return provider_device_id(session) if session.get_providers()[0] in GPU_PROVIDERS else None


def provider_device_id(session) -> int:
    """The GPU a session's first provider runs on: its ``device_id`` option (0 when not given), so IO binding
    puts the buffers on the GPU the model is on (``providers=[("CUDAExecutionProvider", {"device_id": 1})]``)."""
    provider = session.get_providers()[0]
    return int(session.get_provider_options().get(provider, {}).get("device_id", 0))


#: ONNX Runtime's CUDA provider runs a session normally once or twice (its ``min_num_runs_before_cuda_graph_
#: capture_``: 1 in older releases, 2 in newer) and captures the graph on the next run: a capture failure shows in
#: a session's first three runs.
CAPTURE_RUNS = 3
#: Failures that are not the capture's, whenever they happen: memory (ONNX Runtime's arena, CUDA) and inputs
#: (ONNX Runtime's ``InvalidArgument``); they are raised as they are and graphs stay on.
_NOT_CAPTURE = ("out of memory", "failed to allocate", "invalid_argument", "invalidargument")


def is_capture_failure(exc: BaseException, runs_before: int) -> bool:
    """Whether ``exc``, raised by a session's run after ``runs_before`` earlier runs, may be its CUDA graph failing
    to capture (then the backend goes on without graphs and runs the batch again). Only a session's first
    :data:`CAPTURE_RUNS` runs capture; running out of memory or a bad input is never a capture failure."""
    text = f"{type(exc).__name__} {exc}".lower()
    return runs_before < CAPTURE_RUNS and not any(word in text for word in _NOT_CAPTURE)


class BoundForward:
    """``batch -> output`` through IO binding: the input and output live in ``device`` buffers (on GPU
    ``device_id``) that are reused while the shape stays the same (the same addresses every run, as a CUDA graph
    replay needs).

    One host-to-device copy (``update_inplace``) and one device-to-host copy per call; on ``'cpu'`` the buffers are
    host arrays of the binding's own (never the caller's), and the result is a copy.
    """

    def __init__(self, session, device: str = "cuda", device_id: int = 0) -> None:
        self.session, self.device, self.device_id = session, device, device_id
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.shape: tuple[int, ...] | None = None
        self._input = self._output = self._binding = None
        #: runs started so far (a CUDA graph is captured in the first few, :data:`CAPTURE_RUNS`)
        self.runs = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        ort = import_onnxruntime()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if tuple(batch.shape) != self.shape:
            # BANet's output has its input's shape (a residual network); a new shape gets new buffers
            self._input = ort.OrtValue.ortvalue_from_numpy(batch.copy(), self.device, self.device_id)
            self._output = ort.OrtValue.ortvalue_from_shape_and_type(batch.shape, np.float32, self.device,
                                                                     self.device_id)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, self._input)
            binding.bind_ortvalue_output(self.output_name, self._output)
            self._binding, self.shape = binding, tuple(batch.shape)
        else:
            self._input.update_inplace(batch)
        self.runs += 1
        self.session.run_with_iobinding(self._binding)
        out = self._output.numpy()
        return out.copy() if self.device == "cpu" else out  # a CPU value's array is the binding's own buffer


def cpu_device_providers(device, providers: list | None) -> list | None:
    """The providers for ONNX Runtime's ``device`` option: "cpu" (any case) means the CPU provider alone (and
    agrees with ``providers`` naming only it); None leaves ``providers`` as given. Anything else is one
    :class:`OptionError` line: a GPU is chosen with ``providers`` on this backend."""
    if device is None:
        return providers
    if not (isinstance(device, str) and device.lower() == "cpu"):
        raise OptionError(f"the onnxruntime backend takes device='cpu' (its CPU provider), got {device!r}; for a "
                          "GPU pass providers=['CUDAExecutionProvider'] (onnxruntime-gpu), or run the checkpoint "
                          "with backend='torch', device='cuda'")
    if providers is None:
        return ["CPUExecutionProvider"]
    if any(provider_name(p) != "CPUExecutionProvider" for p in providers):
        raise OptionError(f"device='cpu' and providers={providers!r} disagree; give one of them")
    return providers


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file exported by ``export/to_onnx.py`` (its metadata gives the conventions).

    ``static=True`` opens one session per input shape with the free dimensions fixed (ONNX Runtime then plans
    memory and picks kernels for that shape), kept in a bounded cache of ``shape_cache`` shapes; the default is
    one dynamic-shape session. ``io_binding`` and ``cuda_graph`` (None: automatic, see :func:`binding_plan`)
    matter on a GPU: device buffers per shape, and a CUDA graph per fixed-shape session.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 static: bool = False, shape_cache: int = 4, io_binding: bool | None = None,
                 cuda_graph: bool | None = None, device: str | None = None) -> None:
        """``device``: "cpu" (what apps pass to every backend) runs on the CPU provider; None: the best provider
        installed (``providers`` picks them by name)."""
        providers = cpu_device_providers(device, providers)
        check_threads(threads)
        threads = int(threads) if threads else None  # numpy integers too
        import_onnxruntime()
        metadata = read_onnx_metadata(path)
        self.path, self.threads, self.static = Path(path), threads, static
        self._requested = providers
        self._graph_failed = False
        self.binding_device: str | None = None
        self.cuda_graph = False
        self._sessions = ShapeCache(self._open, shape_cache)
        dynamic = self._open(())  # a model ONNX Runtime cannot load fails here, not at the first image
        self.providers = dynamic[0].get_providers()
        #: the GPU the CUDA or TensorRT provider runs on (None: not on a GPU). The TensorRT provider comes first
        #: where installed: it was left out, so a GPU session got the host's 768 MiB budget and cut frames in tiles
        self.gpu_index = gpu_of(dynamic[0])
        limits = limits_from_metadata(metadata)
        self.binding_device, self.cuda_graph = binding_plan(self.providers, static or limits.static_shape is not None,
                                                            io_binding, cuda_graph)
        if self.binding_device and not static:
            dynamic = self._open(()) if self.cuda_graph else (dynamic[0], self._forward_for(dynamic[0]))
        self._dynamic = None if static else dynamic
        #: the CPU session release_memory runs its call on (per-shape sessions share its arena); None on a GPU
        self._shrinker = dynamic[0] if self.providers[0] == "CPUExecutionProvider" else None
        super().__init__(metadata, limits)

    def _providers_for_graphs(self) -> list | None:
        """The requested providers with the CUDA provider's ``enable_cuda_graph`` option set."""
        names = self._requested or self.providers
        out = []
        for provider in names:
            name, options = (provider if isinstance(provider, tuple) else (provider, {}))
            if name == "CUDAExecutionProvider":
                options = {**options, "enable_cuda_graph": "1"}
            out.append((name, options) if options else name)
        return out

    def _open(self, shape: tuple[int, ...]):
        """(session, forward function) for a new session; ``shape`` () keeps the free dimensions free."""
        fixed = {dim: value for dim, value in zip(FREE_DIMS, shape) if dim}
        if self.cuda_graph and not self._graph_failed:
            try:
                session = open_session(self.path, self._providers_for_graphs(), self.threads, fixed_dims=fixed)
                return session, self._forward_for(session)
            except Exception as exc:  # e.g. a node placed on the CPU: capture is impossible for this model
                self._graph_failed = True
                log.warning("ONNX Runtime cannot use CUDA graphs for %s, running with IO binding alone: %s",
                            self.path.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        session = open_session(self.path, self._requested, self.threads, fixed_dims=fixed)
        return session, self._forward_for(session)

    def _forward_for(self, session):
        if self.binding_device is None:
            return session_forward(session)
        device_id = provider_device_id(session) if self.binding_device == "cuda" else 0
        return BoundForward(session, self.binding_device, device_id)

    def device_memory_bytes(self) -> int | None:
        """Total memory of the GPU the CUDA provider runs on (read with cuda-python); None on the CPU, or where
        cuda-python is not installed to ask (the Deblurrer's budget then stays the host's)."""
        if self.gpu_index is None:
            return None
        from runtime.backends.cuda import CudaUnavailableError, gpu_info

        try:
            return gpu_info(self.gpu_index).total_memory
        except CudaUnavailableError:
            return None

    @property
    def session_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes with a static session open now, least recently used first."""
        return self._sessions.shapes()

    def run(self, batch: np.ndarray) -> np.ndarray:
        session, forward = self._dynamic or self._sessions.get(tuple(batch.shape))
        if not self.cuda_graph or self._graph_failed:
            return forward(batch)
        runs_before = getattr(forward, "runs", 0)
        try:
            return forward(batch)
        except Exception as exc:
            if not is_capture_failure(exc, runs_before):  # out of memory, a bad input...: graphs stay on
                raise
            # the capture failed in a session's first runs: reopen without graphs, once
            self._graph_failed = True
            log.warning("ONNX Runtime's CUDA graph failed for %s, running with IO binding alone: %s",
                        self.path.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._sessions.clear()
            if self._dynamic is not None:
                self._dynamic = self._open(())
            return self.run(batch)

    def release_memory(self) -> None:
        """Hand back what the process's shared CPU memory arena keeps between calls: the peak of the largest call
        (about 860 MB after a 720x1280 INT8 one). One call with ONNX Runtime's arena shrinkage on
        (``memory.enable_memory_arena_shrinkage``), on the smallest input the model takes (a static export: its one
        shape), frees every block not in use, per-shape sessions' included (they share the arena). GPU sessions
        keep their memory (their providers' arenas, sized for the device)."""
        if self._shrinker is None:
            return
        ort = import_onnxruntime()
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        if self.limits.static_shape is not None:
            batch, height, width = self.limits.static_shape
        else:
            batch = self.limits.fixed_batch or 1
            height, width = padded_size(*self.limits.min_hw, self.metadata.conventions.size_multiple)
        smallest = np.zeros((batch, 3, height, width), np.float32)
        self._shrinker.run(None, {self._shrinker.get_inputs()[0].name: smallest}, options)

    def close(self) -> None:
        self._dynamic = self._shrinker = None
        self._sessions.clear()

    def describe(self) -> str:
        mode = f", static shapes, cache {self._sessions.size}" if self.static else ""
        if self.binding_device:
            mode += ", IO binding" + (", CUDA graphs" if self.cuda_graph and not self._graph_failed else "")
        return f"onnxruntime {self.providers[0]} ({self.metadata.precision}{mode})"
