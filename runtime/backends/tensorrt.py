"""TensorRT backend: an engine built by ``export/build_trt.py``, on TensorRT or TensorRT for RTX.

The manifest next to the engine is read first: an engine for another TensorRT release or flavour, another GPU
(unless built hardware-compatible), other RTX targets, or built from an ONNX that has changed since, is refused
with :class:`IncompatibleArtifactError` naming what differs and the command that rebuilds it, before TensorRT
touches the file. Missing TensorRT, cuda-python or GPU is a :class:`BackendUnavailableError` with install hints.

Execution follows NVIDIA's documented TensorRT 10 API (the same in ``tensorrt`` 10/11 and ``tensorrt_rtx``):
``Runtime.deserialize_cuda_engine``, ``create_execution_context``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3`` on a CUDA stream, with device buffers from cuda-python (:mod:`runtime.backends.cuda`).
TensorRT for RTX compiles kernels just in time on first use of a shape; its runtime cache (``runtime_cache=``,
default in ``~/.cache/banet-deploy``) keeps them across runs.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
from pathlib import Path

import numpy as np

from banet.errors import DeblurrerClosedError, first_line
from banet.hashing import file_sha256
from banet.manifest import (
    FLAVOUR_NAMES,
    FLAVOURS,
    INSTALL_HINTS,
    EngineManifest,
    ManifestError,
    RuntimeEnvironment,
    explain,
    incompatibilities,
    read_manifest,
)
from runtime.backends.base import Backend, BackendUnavailableError, IncompatibleArtifactError, ShapeLimits
from runtime.backends.cuda import (
    CudaGraph,
    CudaUnavailableError,
    DeviceBuffer,
    GpuInfo,
    PinnedBuffer,
    Stream,
    check,
    gpu_info,
    import_cudart,
)

log = logging.getLogger(__name__)

#: CUDA graphs a TensorRT backend keeps (one per input shape, least recently used dropped): each holds device memory.
GRAPHS_KEPT = 8


def limits_from_manifest(manifest: EngineManifest) -> ShapeLimits:
    """Shape limits of the engine's optimisation profile (NCHW min/max)."""
    p = manifest.profile
    (n0, _, h0, w0), (n1, _, h1, w1) = p.min, p.max
    static = (n0, h0, w0) if (n0, h0, w0) == (n1, h1, w1) else None
    return ShapeLimits(min_hw=(h0, w0), max_hw=(h1, w1), max_batch=n1, static_shape=static,
                       fixed_batch=n0 if n0 == n1 else None)


def import_flavour(flavour: str):
    """The TensorRT module an engine needs, or BackendUnavailableError saying what to install."""
    try:
        return importlib.import_module(FLAVOURS[flavour])
    except Exception as exc:  # ImportError, or a broken install (e.g. PyPI's tensorrt download stub)
        other = next(f for f in FLAVOURS if f != flavour)
        try:
            importlib.import_module(FLAVOURS[other])
            instead = (f"; this machine has {FLAVOUR_NAMES[other]}, which cannot load it (rebuild the engine with "
                       f"--runtime {other} to use that)")
        except Exception:
            instead = ""
        raise BackendUnavailableError(f"this engine needs {FLAVOUR_NAMES[flavour]}, which is not installed "
                                      f"({type(exc).__name__}: {exc}): {INSTALL_HINTS[flavour]}, on a GPU "
                                      f"machine{instead}") from exc


class TensorRTBackend(Backend):
    """Runs one engine on one CUDA GPU. ``run`` takes and returns NCHW float32 host arrays."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0, runtime_cache: str | Path | bool | None = None,
                 check_onnx: bool = True, cuda_graph: bool = False) -> None:
        """Open ``path`` (an ``.engine`` with its ``.json`` manifest).

        Args:
            device: CUDA device index.
            runtime_cache: TensorRT for RTX only: file for its just-in-time kernel cache (default: in the
                banet-deploy cache folder, keyed by engine and GPU); False disables it.
            check_onnx: refuse the engine if the ONNX it was built from is still there but has changed.
            cuda_graph: capture each input shape's inference in a CUDA graph the first time it runs and replay it
                after (less launch overhead for fixed-shape streams such as video; one graph per shape).
        """
        path = Path(path)
        self.path = path
        self.context = self.engine = self.stream = None
        self._buffers: list[DeviceBuffer] = []
        self._pinned: list[PinnedBuffer] = []
        self._graphs: dict[tuple[int, ...], CudaGraph] = {}  # oldest use first; at most GRAPHS_KEPT
        self.cuda_graph = cuda_graph
        #: shapes whose capture failed: they run without a graph from then on (logged once each)
        self._graph_failed: set[tuple[int, ...]] = set()
        #: the shape last enqueued on the context: TensorRT updates its internal state on the first enqueue after
        #: a shape change, so a graph is launched only where the context last ran its own shape
        self._last_enqueued: tuple[int, ...] | None = None
        self._lock = threading.Lock()
        self.runtime_cache_path: Path | None = None
        self._runtime_cache = None
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            raise IncompatibleArtifactError(str(exc)) from exc
        # The bytes TensorRT will load are read once, here, and must be the ones the manifest was checked against:
        # a build replacing the pair between the two reads would otherwise pair an old manifest with a new engine.
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.engine_sha256:
            raise IncompatibleArtifactError(f"{path} changed while it was being opened (replaced by a build?); "
                                            "open it again")
        self.manifest = manifest
        self.name = manifest.runtime
        trt = import_flavour(manifest.runtime)
        try:
            cudart = import_cudart()
            gpu = gpu_info(device)
        except CudaUnavailableError as exc:
            raise BackendUnavailableError(f"cannot run {path} on {FLAVOUR_NAMES[manifest.runtime]}: {exc}; it needs "
                                          "an NVIDIA GPU with its driver and cuda-python (pip install "
                                          "'cuda-python>=12'), or run the .onnx with backend='onnxruntime'") from exc
        self.gpu: GpuInfo = gpu
        env = RuntimeEnvironment(manifest.runtime, str(trt.__version__), gpu.name, gpu.compute_capability)
        onnx_sha = None
        onnx_path = (path.parent / manifest.onnx.get("path", "")).resolve()
        if check_onnx and manifest.onnx.get("path") and onnx_path.is_file():
            onnx_sha = file_sha256(onnx_path)
        problems = incompatibilities(manifest, env, onnx_sha)
        if problems:
            raise IncompatibleArtifactError(explain(path, manifest, problems))
        metadata = manifest.model_metadata()
        super().__init__(metadata, limits_from_manifest(manifest))

        self.trt, self.cudart = trt, cudart
        check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if manifest.version_compatible:
            self.runtime.engine_host_code_allowed = True  # version-compatible engines embed their lean runtime
        self.engine = self.runtime.deserialize_cuda_engine(data)
        del data
        if self.engine is None:
            raise IncompatibleArtifactError(f"{FLAVOUR_NAMES[manifest.runtime]} {trt.__version__} could not "
                                            f"deserialize {path} (its log above says why); rebuild it with: "
                                            f"{manifest.rebuild_command}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise IncompatibleArtifactError(f"{path}: expected one input and one output, found {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        for name in (self.input_name, self.output_name):
            if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise IncompatibleArtifactError(f"{path}: tensor {name!r} is {self.engine.get_tensor_dtype(name)}, "
                                                "expected float32 input/output (export with export/to_onnx.py)")
        if manifest.runtime == "tensorrt-rtx":
            self.context = self._rtx_context(runtime_cache, manifest, gpu)
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError(f"could not create an execution context for {path} (out of GPU memory? "
                                          f"its profile allows up to {manifest.profile.max})")
        self.stream = Stream(cudart)
        self._buffers = [DeviceBuffer(cudart), DeviceBuffer(cudart)]
        self._pinned = [PinnedBuffer(cudart), PinnedBuffer(cudart)]

    def _rtx_context(self, runtime_cache, manifest: EngineManifest, gpu: GpuInfo):
        """Execution context with a runtime cache (TensorRT for RTX: ``IRuntimeConfig``/``IRuntimeCache``)."""
        config = self.engine.create_runtime_config()
        if runtime_cache is not False:
            if runtime_cache in (None, True):
                from banet.paths import cache_dir

                cc = "".join(map(str, gpu.compute_capability))
                runtime_cache = cache_dir() / f"{manifest.engine_sha256[:16]}-sm{cc}.rtx-runtime-cache"
            self.runtime_cache_path = Path(runtime_cache)
            self._runtime_cache = config.create_runtime_cache()
            if self.runtime_cache_path.is_file():
                if not self._runtime_cache.deserialize(self.runtime_cache_path.read_bytes()):
                    log.info("runtime cache %s does not match this GPU/driver; starting a new one",
                             self.runtime_cache_path)
            config.set_runtime_cache(self._runtime_cache)
        return self.engine.create_execution_context(config)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One inference; thread-safe (calls on one instance are serialised: one context, one stream)."""
        batch = np.asarray(batch, dtype=np.float32)
        problem = self.limits.check(batch.shape)
        if problem:
            raise ValueError(f"input of shape {batch.shape} cannot run on {self.path.name}: {problem}")
        with self._lock:
            if self.context is None:
                raise DeblurrerClosedError("this TensorRT backend has been closed")
            return self._run_locked(batch)

    def _run_locked(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise ValueError(f"{self.path.name} refused input shape {shape}")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        host_in = self._pinned[0].array(shape)
        host_out = self._pinned[1].array(out_shape)
        np.copyto(host_in, batch)
        nbytes_in, nbytes_out = host_in.nbytes, host_out.nbytes
        if nbytes_in > self._buffers[0].nbytes or nbytes_out > self._buffers[1].nbytes:
            self._drop_graphs()  # graphs hold device addresses: a re-allocation invalidates them
        src = self._buffers[0].ensure(nbytes_in)
        dst = self._buffers[1].ensure(nbytes_out)
        self.context.set_tensor_address(self.input_name, src)
        self.context.set_tensor_address(self.output_name, dst)
        self.stream.to_device(src, host_in)
        graph = self._graphs.get(shape)
        if graph is not None and self._last_enqueued == shape:
            self._graphs[shape] = self._graphs.pop(shape)  # most recently used last
            graph.launch(self.stream)
        else:
            # an eager enqueue: the first after a shape change updates TensorRT's internal state (a graph of this
            # shape launched after another shape ran would replay with the other's); the next call may capture
            self._enqueue(shape)
            self._last_enqueued = shape
            if self.cuda_graph and graph is None and shape not in self._graph_failed:
                self._capture(shape)
        self.stream.to_host(host_out, dst)
        self.stream.synchronize()
        return host_out.copy()

    def _capture(self, shape: tuple[int, ...]) -> None:
        """Capture this shape's enqueue in a graph (the result of this call is the eager one already enqueued); a
        failure (RTX engines built without user-allocated memory cannot be captured) leaves the shape eager, logged
        once, instead of failing this call and every later one. At most :data:`GRAPHS_KEPT` graphs are kept."""
        try:
            self._graphs[shape] = CudaGraph(self.cudart, self.stream, lambda: self._enqueue(shape))
        except Exception as exc:  # noqa: BLE001 (best effort, as the PyTorch backend's graphs)
            self._graph_failed.add(shape)
            log.warning("CUDA graph capture failed for %s on input %s, running it without one from now on: %s",
                        self.path.name, "x".join(map(str, shape)), first_line(exc))
            return
        while len(self._graphs) > GRAPHS_KEPT:
            self._graphs.pop(next(iter(self._graphs))).destroy()

    def _enqueue(self, shape: tuple[int, ...]) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"TensorRT failed to run {self.path.name} on shape {shape}")

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs = {}

    def close(self) -> None:
        """Free the GPU memory, graphs and stream (saving the RTX runtime cache); waits for a running call."""
        with self._lock:
            if self._runtime_cache is not None and self.runtime_cache_path is not None:
                try:
                    self.runtime_cache_path.parent.mkdir(parents=True, exist_ok=True)
                    self.runtime_cache_path.write_bytes(bytes(self._runtime_cache.serialize()))
                except OSError as exc:
                    log.warning("could not save the runtime cache %s: %s", self.runtime_cache_path, exc)
                self._runtime_cache = None
            self._drop_graphs()
            self.context = None
            self.engine = None
            for buffer in (*self._buffers, *self._pinned):
                buffer.free()
            self._buffers, self._pinned = [], []
            if self.stream is not None:
                self.stream.destroy()
                self.stream = None

    def device_memory_bytes(self) -> int | None:
        """The engine's GPU's total memory (read when the engine was opened)."""
        return self.gpu.total_memory

    def describe(self) -> str:
        m = self.manifest
        return f"{FLAVOUR_NAMES[m.runtime]} {m.runtime_version} on {self.gpu.name} ({m.precision})"

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass
