"""ONNX Runtime on CUDA: when IO binding and CUDA graphs engage, and the binding path itself, which ONNX Runtime's
CPU provider also runs (host buffers), compared with plain ``session.run``. Real CUDA graphs need onnxruntime-gpu
and a GPU (marked ``gpu``, skipped without them)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from banet.errors import OptionError
from runtime import Deblurrer
from runtime.backends import onnxruntime_backend as ort_backend
from runtime.backends.onnxruntime_backend import BoundForward, OnnxRuntimeBackend, binding_plan, open_session

CUDA, CPU, TRT = "CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture
def tiny_onnx(tiny_weights):
    from export.checkpoint_onnx import onnx_for_checkpoint

    return onnx_for_checkpoint(tiny_weights)


def _batch(shape, seed):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


@pytest.mark.parametrize("providers, fixed, io_binding, cuda_graph, expected", [
    ([CUDA, CPU], True, None, None, ("cuda", True)),      # GPU, fixed shapes: binding and graphs
    ([CUDA, CPU], False, None, None, ("cuda", False)),    # GPU, dynamic shapes: binding only
    ([TRT, CUDA, CPU], True, None, None, ("cuda", False)),  # TensorRT provider: its own graphs, not these
    ([CUDA, CPU], True, None, False, ("cuda", False)),
    ([CUDA, CPU], True, False, False, (None, False)),
    ([CPU], True, None, None, (None, False)),             # CPU: neither by default
    ([CPU], False, True, None, ("cpu", False)),           # forced binding on the CPU: host buffers
])
def test_binding_plan(providers, fixed, io_binding, cuda_graph, expected):
    assert binding_plan(providers, fixed, io_binding, cuda_graph) == expected


@pytest.mark.parametrize("providers, fixed, io_binding, message", [
    ([CPU], True, None, "needs ONNX Runtime's CUDAExecutionProvider"),
    ([CUDA, CPU], False, None, "needs fixed input shapes: static=True"),
    ([CUDA, CPU], True, False, "needs io_binding"),
])
def test_graph_requests_that_cannot_be_met_are_one_line(providers, fixed, io_binding, message):
    with pytest.raises(OptionError, match=message):
        binding_plan(providers, fixed, io_binding, cuda_graph=True)
    with pytest.raises(OptionError, match="io_binding must be True, False or None"):
        binding_plan(providers, fixed, io_binding="yes")


def test_bound_forward_on_the_cpu_equals_session_run(tiny_onnx):
    session = open_session(tiny_onnx, [CPU], threads=1)
    plain = ort_backend.session_forward(session)
    bound = BoundForward(session, "cpu")
    inputs = [_batch((1, 3, 32, 48), 0), _batch((1, 3, 32, 48), 1), _batch((2, 3, 24, 40), 2),
              _batch((1, 3, 32, 48), 3)]
    kept = [x.copy() for x in inputs]
    outputs = [bound(x) for x in inputs]  # same shape twice (update in place), a new shape, back again
    for x, x_before, out in zip(inputs, kept, outputs):
        np.testing.assert_array_equal(x, x_before)  # the caller's array is never the bound buffer
        np.testing.assert_array_equal(out, plain(x))  # earlier results are not overwritten by later runs
    assert bound.shape == (1, 3, 32, 48)


@pytest.mark.parametrize("static", [False, True])
def test_backend_with_forced_binding_matches_the_plain_backend(tiny_onnx, static):
    plain = OnnxRuntimeBackend(tiny_onnx, threads=1, static=static)  # static sessions pick their own kernels
    bound = OnnxRuntimeBackend(tiny_onnx, threads=1, static=static, io_binding=True)
    assert bound.binding_device == "cpu" and not bound.cuda_graph and "IO binding" in bound.describe()
    assert plain.binding_device is None and "IO binding" not in plain.describe()  # off on the CPU by default
    for seed, shape in enumerate([(1, 3, 40, 56), (1, 3, 40, 56), (3, 3, 24, 32)]):
        x = _batch(shape, seed)
        np.testing.assert_array_equal(bound.run(x), plain.run(x))


def test_cuda_graph_on_the_cpu_provider_is_refused_in_one_line(tiny_onnx):
    with pytest.raises(OptionError, match="cuda_graph=True needs ONNX Runtime's CUDAExecutionProvider"):
        Deblurrer(tiny_onnx, backend="onnxruntime", cuda_graph=True, static=True)


def test_deblurrer_checks_io_binding_and_cuda_graph_as_the_backends_do(tiny_onnx, monkeypatch):
    with Deblurrer(tiny_onnx, backend="onnxruntime", cuda_graph=None, io_binding=None, threads=1) as deblur:
        assert not deblur.backend.cuda_graph and deblur.backend.binding_device is None  # automatic: off on a CPU
    monkeypatch.setattr(ort_backend, "read_onnx_metadata", lambda *a: pytest.fail("opened before the check"))
    for name in ("io_binding", "cuda_graph"):
        with pytest.raises(OptionError, match=rf"^{name} must be True, False or None \(automatic\), got 'yes'$"):
            Deblurrer(tiny_onnx, backend="onnxruntime", **{name: "yes"})


def test_graph_option_goes_to_the_cuda_provider_only(tiny_onnx):
    backend = OnnxRuntimeBackend(tiny_onnx, threads=1)
    backend.providers = [CUDA, CPU]
    assert backend._providers_for_graphs() == [(CUDA, {"enable_cuda_graph": "1"}), CPU]
    backend._requested = [(CUDA, {"device_id": 1}), CPU]
    assert backend._providers_for_graphs() == [(CUDA, {"device_id": 1, "enable_cuda_graph": "1"}), CPU]


def test_a_session_that_cannot_take_graphs_falls_back_to_binding_alone(tiny_onnx, monkeypatch, caplog):
    """Stand-in for onnxruntime-gpu refusing ``enable_cuda_graph`` (a node on the CPU): logged once, every
    shape then opens without it, and the results are the plain session's."""
    plain = OnnxRuntimeBackend(tiny_onnx, threads=1, static=True)
    real_open = ort_backend.open_session
    attempts = []

    def open_refusing_graphs(path, providers=None, *args, **kwargs):
        if providers and any(isinstance(p, tuple) for p in providers):
            attempts.append(providers)
            raise RuntimeError("This session cannot use the CUDA Graph feature as requested by the user\nmore")
        return real_open(path, providers, *args, **kwargs)

    monkeypatch.setattr(ort_backend, "open_session", open_refusing_graphs)
    monkeypatch.setattr(ort_backend, "binding_plan", lambda *a, **k: ("cpu", True))
    monkeypatch.setattr(OnnxRuntimeBackend, "_providers_for_graphs", lambda self: [(CPU, {})])
    with caplog.at_level(logging.WARNING, logger=ort_backend.__name__):
        backend = OnnxRuntimeBackend(tiny_onnx, threads=1, static=True)
        for seed, shape in enumerate([(1, 3, 32, 32), (1, 3, 48, 32)]):
            x = _batch(shape, seed)
            np.testing.assert_array_equal(backend.run(x), plain.run(x))
    assert len(attempts) == 1 and len(caplog.records) == 1 and "more" not in caplog.records[0].getMessage()
    assert "CUDA graphs" not in backend.describe() and backend.session_shapes == [(1, 3, 32, 32), (1, 3, 48, 32)]


class _FakeSession:
    """What BoundForward asks of an ONNX Runtime session, on the providers given (no model, no GPU)."""

    def __init__(self, providers, options):
        self._providers, self._options = providers, options
        self.bindings = []

    def get_inputs(self):
        return [type("Arg", (), {"name": "input"})()]

    get_outputs = get_inputs

    def get_providers(self):
        return self._providers

    def get_provider_options(self):
        return self._options

    def io_binding(self):
        binding = type("Binding", (), {"bind_ortvalue_input": lambda *a: None,
                                       "bind_ortvalue_output": lambda *a: None})()
        self.bindings.append(binding)
        return binding

    def run_with_iobinding(self, binding):
        pass


class _FakeOrtValue:
    made: list[tuple[str, int]] = []

    def __init__(self, array):
        self.array = array

    @classmethod
    def ortvalue_from_numpy(cls, array, device, device_id):
        cls.made.append((device, device_id))
        return cls(array)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device, device_id):
        cls.made.append((device, device_id))
        return cls(np.zeros(shape, dtype))

    def numpy(self):
        return self.array


@pytest.mark.parametrize("options, expected", [
    ({CUDA: {"device_id": "1", "arena_extend_strategy": "kNextPowerOfTwo"}, CPU: {}}, 1),
    ({CUDA: {}, CPU: {}}, 0),
    ({}, 0),
])
def test_io_binding_puts_buffers_on_the_sessions_gpu(tiny_onnx, monkeypatch, options, expected):
    backend = OnnxRuntimeBackend(tiny_onnx, threads=1)
    backend.binding_device = "cuda"
    fake_ort = type("FakeOrt", (), {"OrtValue": _FakeOrtValue})
    monkeypatch.setattr(ort_backend, "import_onnxruntime", lambda: fake_ort)
    monkeypatch.setattr(_FakeOrtValue, "made", [])
    forward = backend._forward_for(_FakeSession([CUDA, CPU], options))
    assert forward.device_id == expected
    forward(_batch((1, 3, 8, 8), 0))
    assert _FakeOrtValue.made == [("cuda", expected)] * 2  # input and output buffers on that GPU


@pytest.mark.parametrize("message, runs_before, expected", [
    ("CUDA failure 900: operation not permitted when stream is capturing", 0, True),
    ("CUDA failure 901: operation failed due to a previous error during capture", 2, True),
    ("CUDA failure 901: operation failed due to a previous error during capture", 3, False),  # after capture
    ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer", 0, False),
    ("CUDA error cudaErrorMemoryAllocation: out of memory", 1, False),
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input", 0, False),
])
def test_which_run_errors_count_as_capture_failures(message, runs_before, expected):
    assert ort_backend.is_capture_failure(RuntimeError(message), runs_before) is expected


def _graph_backend_on_the_cpu(tiny_onnx, monkeypatch):
    """A static backend that believes it runs CUDA graphs (the CPU provider with an options dict stands in)."""
    monkeypatch.setattr(ort_backend, "binding_plan", lambda *a, **k: ("cpu", True))
    monkeypatch.setattr(OnnxRuntimeBackend, "_providers_for_graphs", lambda self: [(CPU, {})])
    return OnnxRuntimeBackend(tiny_onnx, threads=1, static=True)


def _failing_runs(monkeypatch, failures: dict[int, str]):
    """Make BoundForward's run number k (1, 2...) of each session raise RuntimeError(failures[k])."""
    real = BoundForward.__call__

    def call(self, batch):
        if self.runs + 1 in failures:
            self.runs += 1
            raise RuntimeError(failures[self.runs])
        return real(self, batch)

    monkeypatch.setattr(BoundForward, "__call__", call)


@pytest.mark.parametrize("failures", [
    {1: "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer of size 9"},
    {4: "CUDA failure 700: an illegal memory access was encountered"},  # after the capture runs
])
def test_errors_that_are_not_capture_failures_leave_graphs_on(tiny_onnx, monkeypatch, failures):
    backend = _graph_backend_on_the_cpu(tiny_onnx, monkeypatch)
    _failing_runs(monkeypatch, failures)
    x = _batch((1, 3, 32, 32), 0)
    message = next(iter(failures.values()))
    for _ in range(next(iter(failures)) - 1):
        backend.run(x)
    with pytest.raises(RuntimeError, match=message.split(":")[0]):
        backend.run(x)
    assert backend.cuda_graph and not backend._graph_failed and "CUDA graphs" in backend.describe()
    assert backend.session_shapes == [(1, 3, 32, 32)]  # the session is kept


def test_a_capture_failure_in_the_first_runs_turns_graphs_off_and_reruns(tiny_onnx, monkeypatch, caplog):
    plain = OnnxRuntimeBackend(tiny_onnx, threads=1, static=True)
    backend = _graph_backend_on_the_cpu(tiny_onnx, monkeypatch)
    _failing_runs(monkeypatch, {2: "CUDA failure 900: operation not permitted when stream is capturing"})
    x = _batch((1, 3, 32, 32), 0)
    with caplog.at_level(logging.WARNING, logger=ort_backend.__name__):
        first, second = backend.run(x), backend.run(x)  # the second fails, reopens without graphs, runs again
    np.testing.assert_array_equal(second, plain.run(x))
    np.testing.assert_array_equal(first, second)
    assert backend._graph_failed and "CUDA graphs" not in backend.describe() and len(caplog.records) == 1


def _cuda_provider_or_skip():
    ort = pytest.importorskip("onnxruntime")
    if CUDA not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with a CUDA GPU (CUDAExecutionProvider not available)")


@pytest.mark.gpu
def test_cuda_graphs_on_the_gpu_match_the_cpu(tiny_onnx):
    _cuda_provider_or_skip()
    cpu = OnnxRuntimeBackend(tiny_onnx, providers=[CPU], threads=1)
    gpu = OnnxRuntimeBackend(tiny_onnx, providers=[CUDA, CPU], static=True)
    assert gpu.binding_device == "cuda" and gpu.cuda_graph
    for seed in range(3):  # capture, then replays with new data at the same address
        x = _batch((1, 3, 64, 96), seed)
        np.testing.assert_allclose(gpu.run(x), cpu.run(x), rtol=0, atol=1e-3)


def test_a_session_on_the_tensorrt_provider_is_on_a_gpu():
    """Round 17: only the CUDA provider counted as a GPU: with onnxruntime-gpu's TensorRT provider first (its
    default where installed) the session got the host's 768 MiB budget, and a 1080x1920 frame was cut in tiles."""
    from runtime.backends.onnxruntime_backend import gpu_of

    assert gpu_of(_FakeSession([TRT, CUDA, CPU], {TRT: {"device_id": "1"}})) == 1
    assert gpu_of(_FakeSession([CUDA, CPU], {CUDA: {}})) == 0
    assert gpu_of(_FakeSession([CPU], {CPU: {}})) is None
