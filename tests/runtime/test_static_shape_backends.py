"""Backends that compile per input shape: OpenVINO and ONNX Runtime's static sessions agree with the dynamic ONNX
Runtime session on odd shapes and tiles, keep a bounded cache of shapes, and fail in one line when missing."""

import builtins

import numpy as np
import pytest

from export.parity import psnr
from runtime import BackendUnavailableError, Deblurrer
from runtime.backends.base import ShapeCache
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

SHAPES = [(1, 3, 64, 64), (2, 3, 40, 56), (1, 3, 32, 96), (1, 3, 64, 64), (3, 3, 24, 40)]


@pytest.fixture
def tiny_onnx(tiny_weights):
    from export.checkpoint_onnx import onnx_for_checkpoint

    return onnx_for_checkpoint(tiny_weights)


def _openvino_backend(path, **options):
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install '.[openvino]'")
    from runtime.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(path, **options)


def test_shape_cache_keeps_the_most_recent_and_builds_each_shape_once():
    built = []
    cache = ShapeCache(lambda shape: built.append(shape) or shape, size=2)
    for shape in [(1,), (2,), (1,), (3,), (1,), (2,)]:
        assert cache.get(shape) == shape
    assert built == [(1,), (2,), (3,), (2,)]  # (2,) was evicted by (3,) since (1,) had been used after it
    assert cache.shapes() == [(1,), (2,)]
    with pytest.raises(ValueError, match="shape_cache"):
        ShapeCache(lambda s: s, size=0)


@pytest.mark.parametrize("static", [True, False])
def test_openvino_agrees_with_onnxruntime_on_odd_shapes(tiny_onnx, static):
    reference = OnnxRuntimeBackend(tiny_onnx, threads=1)
    openvino = _openvino_backend(tiny_onnx, threads=1, static=static, shape_cache=2)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32) - 0.5
        out = openvino.run(x)
        assert out.shape == shape and out.dtype == np.float32
        assert psnr(out, reference.run(x)) >= 138, shape  # the same arithmetic: 143 dB here, both modes
        assert len(openvino.compiled_shapes) <= 2
    assert openvino.compiled_shapes == ([(1, 3, 64, 64), (3, 3, 24, 40)] if static else [()])


#: Shapes whose strip lengths (246 and 123 rows, 100, 200, 135) are where float32 ``n / L`` and OpenVINO's
#: ``n * (1 / L)`` pick different nearest-resize sources (banet.pooling).
ROUNDING_SHAPES = [(1, 3, 246, 98), (1, 3, 100, 100), (1, 3, 120, 200), (1, 3, 270, 136)]


@pytest.mark.parametrize("static", [True, False])
def test_openvino_takes_pytorch_resize_sources_at_every_length(tiny_onnx, static):
    """Same arithmetic as ONNX Runtime, not only close: dynamic-shape compilation of the float32 index graph
    drifted to 125-132 dB on this network at these shapes (OpenVINO's reciprocal for a float Div moved a strip;
    the default model: 77 dB), which a 60 dB bound does not see (banet.pooling)."""
    reference = OnnxRuntimeBackend(tiny_onnx, threads=1)
    openvino = _openvino_backend(tiny_onnx, threads=1, static=static, compile_cache=None)
    rng = np.random.default_rng(5)
    for shape in ROUNDING_SHAPES:
        x = rng.random(shape, dtype=np.float32) - 0.5
        assert psnr(openvino.run(x), reference.run(x)) >= 138, shape  # static: 143 dB here


def test_onnxruntime_static_sessions_match_the_dynamic_session(tiny_onnx):
    dynamic = OnnxRuntimeBackend(tiny_onnx, threads=1)
    static = OnnxRuntimeBackend(tiny_onnx, threads=1, static=True, shape_cache=3)
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32) - 0.5
        assert psnr(static.run(x), dynamic.run(x)) >= 100, shape
    assert static.session_shapes == [(1, 3, 32, 96), (1, 3, 64, 64), (3, 3, 24, 40)]
    assert "static shapes" in static.describe()


def test_openvino_deblurrer_matches_onnxruntime_on_tiles(tiny_onnx):
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install '.[openvino]'")
    image = (np.random.default_rng(2).random((150, 211, 3)) * 255).astype(np.uint8)
    with Deblurrer(tiny_onnx, backend="onnxruntime", tile=64, tile_overlap=16, threads=1) as ort_d, \
            Deblurrer(tiny_onnx, backend="openvino", tile=64, tile_overlap=16, threads=1) as ov_d:
        a, b = ort_d(image), ov_d(image)
        assert ov_d.backend.name == "openvino"
        assert len(ov_d.backend.compiled_shapes) <= 4  # interior, right, bottom and corner tiles at most
    assert a.shape == b.shape == image.shape
    assert psnr(a / 255.0, b / 255.0) >= 60


def test_missing_openvino_is_one_line(tiny_onnx, monkeypatch):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(BackendUnavailableError) as info:
        Deblurrer(tiny_onnx, backend="openvino")
    message = str(info.value)
    assert "\n" not in message and "pip install 'banet-deploy[openvino]'" in message


@pytest.mark.parametrize("option, value", [("threads", -1), ("threads", "x"), ("shape_cache", 0)])
def test_bad_options_are_refused(tiny_onnx, option, value):
    with pytest.raises(ValueError, match=option):
        OnnxRuntimeBackend(tiny_onnx, static=True, **{option: value})


def test_release_memory_keeps_results_and_compiled_shapes(tiny_onnx):
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install '.[openvino]'")
    image = (np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8)
    with Deblurrer(tiny_onnx, backend="openvino", threads=1) as d:
        before = d(image)
        shapes = d.backend.compiled_shapes
        d.release_memory()  # what serving.serve does after a large request
        assert d.backend.compiled_shapes == shapes
        np.testing.assert_array_equal(d(image), before)
    with Deblurrer(tiny_onnx, backend="onnxruntime", threads=1) as d:
        d.release_memory()  # engines that keep nothing accept it too


def test_openvino_dynamic_refuses_a_graph_an_older_exporter_wrote_and_per_shape_runs_it(tiny_onnx, tmp_path):
    """Exports before graph revision 2 compute strip pooling's index in float32, which OpenVINO's dynamic-shape
    compilation rounds differently (strips moved); compiled per shape it matches ONNX Runtime."""
    from banet.errors import ArtifactError
    from tests.older_exports import as_older_export

    older = as_older_export(tiny_onnx, tmp_path / "older.onnx")
    with pytest.raises(ArtifactError) as info:
        _openvino_backend(older, static=False)
    message = str(info.value)
    assert "older.onnx was exported by an older banet-deploy (graph revision 1" in message, message
    assert "re-export it with export/to_onnx.py" in message and "static=True" in message and "\n" not in message
    x = np.random.default_rng(0).random((1, 3, 40, 56), dtype=np.float32)
    expected = OnnxRuntimeBackend(tiny_onnx, threads=1).run(x)
    assert psnr(expected, _openvino_backend(older, static=True, threads=1).run(x)) > 120
    assert psnr(expected, _openvino_backend(tiny_onnx, static=False, threads=1).run(x)) > 120


def test_a_checkpoint_runs_on_openvino_through_its_cached_export(tiny_weights):
    """A checkpoint with backend="openvino" said "install torch" (no opener registered for openvino) where torch
    was installed; it now runs through the same cached, verified export as on ONNX Runtime."""
    pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install '.[openvino]'")
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    with Deblurrer(tiny_weights, backend="openvino", threads=1) as on_openvino, \
            Deblurrer(tiny_weights, backend="onnxruntime", threads=1) as on_onnxruntime:
        assert on_openvino.backend.name == "openvino"
        assert psnr(on_openvino(image) / 255.0, on_onnxruntime(image) / 255.0) > 45
