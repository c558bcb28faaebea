"""The TensorRT backend's refusals, which need neither TensorRT nor a GPU: manifests are checked first."""

import importlib
import json
import types

import numpy as np
import pytest

from banet.manifest import manifest_path
from runtime import BackendUnavailableError, Deblurrer, IncompatibleArtifactError
from runtime.backends import tensorrt as trt_backend
from runtime.backends.cuda import GpuInfo
from tests.manifest_helpers import make_manifest


def write_engine(tmp_path, **changes):
    engine = tmp_path / "tiny_fp16.engine"
    engine.write_bytes(b"engine")
    make_manifest(**changes).write(manifest_path(engine))
    return engine


def installed(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:
        return False


def test_engine_without_manifest_is_refused(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(IncompatibleArtifactError, match="no manifest .*build_trt.py"):
        Deblurrer(engine)


def test_manifest_of_another_engine_is_refused(tmp_path):
    engine = write_engine(tmp_path)
    engine.write_bytes(b"rebuilt engine")
    with pytest.raises(IncompatibleArtifactError, match="does not describe"):
        trt_backend.TensorRTBackend(engine)


def test_engine_replaced_between_manifest_check_and_load_is_refused(tmp_path, monkeypatch):
    """A build swapping the pair after the manifest was checked: the bytes TensorRT would load are not the ones
    the manifest describes, so nothing is loaded."""
    engine = write_engine(tmp_path)
    real = trt_backend.read_manifest

    def read_then_swap(path, *args, **kwargs):
        manifest = real(path, *args, **kwargs)
        engine.write_bytes(b"an engine from a newer build")
        return manifest

    monkeypatch.setattr(trt_backend, "read_manifest", read_then_swap)
    monkeypatch.setattr(trt_backend, "import_flavour", lambda flavour: pytest.fail("TensorRT must not be reached"))
    with pytest.raises(IncompatibleArtifactError, match="changed while it was being opened"):
        trt_backend.TensorRTBackend(engine)


def test_missing_tensorrt_is_backend_unavailable(tmp_path):
    if installed("tensorrt"):
        pytest.skip("TensorRT is installed here")
    engine = write_engine(tmp_path)
    with pytest.raises(BackendUnavailableError, match="needs TensorRT, which is not installed.*pip install"):
        Deblurrer(engine)


def test_missing_gpu_is_backend_unavailable(tmp_path, monkeypatch):
    from runtime.backends.cuda import CudaUnavailableError

    monkeypatch.setattr(trt_backend, "import_flavour", lambda flavour: types.SimpleNamespace(__version__="10.8.0.43"))

    def no_gpu(device=0):
        raise CudaUnavailableError("no usable CUDA GPU: CUDA driver version is insufficient")

    monkeypatch.setattr(trt_backend, "gpu_info", no_gpu)
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        trt_backend.TensorRTBackend(write_engine(tmp_path))


@pytest.mark.parametrize("version, gpu, message", [
    ("10.9.0.34", GpuInfo(0, "NVIDIA GeForce RTX 3090", (8, 6), 24 << 30), "exact release"),
    ("10.8.0.43", GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30), "built on NVIDIA GeForce RTX 3090"),
])
def test_mismatched_engine_is_refused_before_tensorrt_loads_it(tmp_path, monkeypatch, version, gpu, message):
    """A stand-in module and GPU: the refusal happens on the manifest, before any TensorRT call."""
    module = types.SimpleNamespace(__version__=version)  # no Runtime: loading the engine would fail loudly
    monkeypatch.setattr(trt_backend, "import_flavour", lambda flavour: module)
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: None)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda device=0: gpu)
    with pytest.raises(IncompatibleArtifactError, match=message) as info:
        trt_backend.TensorRTBackend(write_engine(tmp_path))
    assert "rebuild it on this machine with: python export/build_trt.py" in str(info.value)


def test_rtx_engine_on_a_datacenter_gpu_is_refused(tmp_path, monkeypatch):
    module = types.SimpleNamespace(__version__="1.7.1.116")
    monkeypatch.setattr(trt_backend, "import_flavour", lambda flavour: module)
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: None)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda device=0: GpuInfo(0, "NVIDIA H100", (9, 0), 80 << 30))
    engine = write_engine(tmp_path, runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None, targets=["sm75"])
    with pytest.raises(IncompatibleArtifactError, match="TensorRT for RTX runs on RTX GPUs"):
        trt_backend.TensorRTBackend(engine)


def test_stale_onnx_is_refused(tmp_path, monkeypatch):
    (tmp_path / "tiny.onnx").write_bytes(b"a different onnx")
    monkeypatch.setattr(trt_backend, "import_flavour", lambda flavour: types.SimpleNamespace(__version__="10.8.0.43"))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: None)
    monkeypatch.setattr(trt_backend, "gpu_info",
                        lambda device=0: GpuInfo(0, "NVIDIA GeForce RTX 3090", (8, 6), 24 << 30))
    with pytest.raises(IncompatibleArtifactError, match="stale"):
        trt_backend.TensorRTBackend(write_engine(tmp_path))


def test_shape_limits_from_the_profile():
    limits = trt_backend.limits_from_manifest(make_manifest())
    assert limits.min_hw == (64, 64) and limits.max_hw == (512, 512) and limits.max_batch == 2
    assert limits.check((1, 3, 100, 100)) is None
    assert "exceeds" in limits.check((1, 3, 600, 100))
    static = make_manifest(profiles=[{"input": "input", "min": [1, 3, 720, 1280], "opt": [1, 3, 720, 1280],
                                      "max": [1, 3, 720, 1280]}])
    assert trt_backend.limits_from_manifest(static).static_shape == (1, 720, 1280)


def test_manifest_json_is_plain(tmp_path):
    engine = write_engine(tmp_path)
    data = json.loads(manifest_path(engine).read_text())
    assert data["profiles"][0]["max"][0] == 2  # what export/to_triton.py reads for max_batch_size


# -- the run loop against stand-ins: checks the order of CUDA/TensorRT calls, never that an engine runs ----------
class _StandInCudart:
    """Records cuda-python runtime calls; 'device memory' is a dict of numpy arrays keyed by fake pointers."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self):
        import ctypes

        self.calls, self.next_ptr, self.host, self._ctypes = [], 1 << 20, {}, ctypes

    def _log(self, name, *values):
        self.calls.append(name)
        return (0, *values)

    def cudaMalloc(self, n):
        self.next_ptr += n + 256
        return self._log("cudaMalloc", self.next_ptr)

    def cudaMallocHost(self, n):
        buf = (self._ctypes.c_char * n)()
        self.host[self._ctypes.addressof(buf)] = buf
        return self._log("cudaMallocHost", self._ctypes.addressof(buf))

    def cudaFreeHost(self, ptr):
        return self._log("cudaFreeHost")

    def cudaFree(self, ptr):
        return self._log("cudaFree")

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        return self._log("H2D" if kind == 1 else "D2H")

    def cudaStreamBeginCapture(self, stream, mode):
        return self._log("BeginCapture")

    def cudaStreamEndCapture(self, stream):
        return self._log("EndCapture", "graph")

    def cudaGraphInstantiate(self, graph, flags):
        return self._log("GraphInstantiate", "exec")

    def cudaGraphLaunch(self, graph_exec, stream):
        return self._log("GraphLaunch")

    def cudaGraphExecDestroy(self, graph_exec):
        return self._log("GraphExecDestroy")

    def cudaGraphDestroy(self, graph):
        return self._log("GraphDestroy")

    def cudaStreamSynchronize(self, stream):
        return self._log("Synchronize")

    def cudaStreamDestroy(self, stream):
        return self._log("StreamDestroy")


class _StandInContext:
    def __init__(self, calls):
        self.calls, self.shape = calls, None

    def set_input_shape(self, name, shape):
        self.shape = shape
        return True

    def get_tensor_shape(self, name):
        return self.shape

    def set_tensor_address(self, name, ptr):
        pass

    def execute_async_v3(self, stream):
        self.calls.append("execute")
        return True


def _stand_in_backend(cuda_graph: bool):
    import threading

    from runtime.backends.base import ShapeLimits
    from runtime.backends.cuda import DeviceBuffer, PinnedBuffer, Stream

    cudart = _StandInCudart()
    backend = object.__new__(trt_backend.TensorRTBackend)
    backend.path, backend.cudart, backend.cuda_graph = trt_backend.Path("stand-in.engine"), cudart, cuda_graph
    backend.context = _StandInContext(cudart.calls)
    backend.limits = ShapeLimits(min_hw=(8, 8), max_hw=(512, 512), max_batch=4)
    backend.input_name, backend.output_name = "input", "output"
    backend._buffers, backend._pinned = [DeviceBuffer(cudart), DeviceBuffer(cudart)], [PinnedBuffer(cudart),
                                                                                     PinnedBuffer(cudart)]
    backend._graphs, backend._lock, backend._runtime_cache = {}, threading.Lock(), None
    backend._graph_failed, backend._last_enqueued = set(), None
    backend.stream = Stream.__new__(Stream)
    backend.stream.cudart, backend.stream.handle = cudart, 7
    return backend, cudart.calls


def test_stand_in_run_loop_reuses_buffers_and_replays_cuda_graphs():
    backend, calls = _stand_in_backend(cuda_graph=True)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    backend.run(x)
    assert calls.count("cudaMallocHost") == 2 and calls.count("cudaMalloc") == 2
    assert calls[calls.index("H2D"):] == ["H2D", "execute", "BeginCapture", "execute", "EndCapture",
                                          "GraphInstantiate", "D2H", "Synchronize"]
    calls.clear()
    backend.run(x)  # same shape: replay, no allocation
    assert calls == ["H2D", "GraphLaunch", "D2H", "Synchronize"]
    calls.clear()
    backend.run(np.zeros((2, 3, 32, 32), np.float32))  # larger: re-allocation drops the graphs that held addresses
    assert calls.index("GraphExecDestroy") < calls.index("cudaMalloc") and "BeginCapture" in calls
    calls.clear()
    backend.close()
    assert calls.count("GraphExecDestroy") == 1 and calls.count("cudaFreeHost") == 2 and "StreamDestroy" in calls
    with pytest.raises(RuntimeError, match="closed"):
        backend.run(x)


def test_stand_in_run_loop_without_graphs_enqueues_each_call():
    backend, calls = _stand_in_backend(cuda_graph=False)
    x = np.zeros((1, 3, 16, 16), np.float32)
    backend.run(x)
    backend.run(x)
    assert calls.count("execute") == 2 and "BeginCapture" not in calls and calls.count("cudaMalloc") == 2
    with pytest.raises(ValueError, match="cannot run on stand-in.engine"):
        backend.run(np.zeros((1, 3, 1024, 16), np.float32))


def test_stand_in_graph_after_another_shape_enqueues_first_and_failures_stay_eager(caplog, monkeypatch):
    """Round 17: a shape's graph was launched right after another shape ran, with TensorRT's internal state still
    the other's (it updates it on the first enqueue after a shape change); a capture that failed failed the call,
    and every later one of that shape; graphs were kept for every shape ever run."""
    import logging

    backend, calls = _stand_in_backend(cuda_graph=True)
    a, b = np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 3, 8, 16), np.float32)
    backend.run(a)
    backend.run(b)
    calls.clear()
    backend.run(a)  # the context last ran b: enqueued, not launched
    assert "execute" in calls and "GraphLaunch" not in calls
    calls.clear()
    backend.run(a)  # and now its graph
    assert calls == ["H2D", "GraphLaunch", "D2H", "Synchronize"]

    many, _ = _stand_in_backend(cuda_graph=True)
    for h in range(8 + 2 * (trt_backend.GRAPHS_KEPT + 3), 8, -2):  # largest first: no re-allocation drops them
        many.run(np.zeros((1, 3, h, 16), np.float32))
    assert len(many._graphs) == trt_backend.GRAPHS_KEPT

    failing, calls = _stand_in_backend(cuda_graph=True)
    monkeypatch.setattr(type(failing.cudart), "cudaStreamBeginCapture",
                        lambda self, stream, mode: (_ for _ in ()).throw(RuntimeError("cudaStreamBeginCapture failed")))
    with caplog.at_level(logging.WARNING):
        failing.run(a)  # the eager result, not the capture's error
        failing.run(a)
    assert caplog.text.count("CUDA graph capture failed") == 1 and calls.count("execute") == 2
