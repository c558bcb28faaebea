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
