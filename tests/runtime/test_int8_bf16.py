"""An INT8 file on OpenVINO with its float layers in bfloat16: allowed where OpenVINO compiles it and the CPU has the
units, chosen by precision="int8" only where the file's held-out record measured it within the budget."""

import importlib.util
import json

import numpy as np
import pytest

from banet.artifacts import int8_onnx_path
from banet.defaults import DEFAULT_ONNX
from export.parity import photo_batch, psnr_db
from runtime import Deblurrer
from runtime.backends.base import BackendUnavailableError
from runtime.selection import OPENVINO_INT8_BF16, int8_compute, precision_options

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
OV_FILE, ORT_FILE = int8_onnx_path(DEFAULT_ONNX, "ov"), int8_onnx_path(DEFAULT_ONNX, "ort")


def _bf16_units() -> bool:
    from runtime.backends.openvino_backend import openvino_bf16_units

    return openvino_bf16_units()


needs_bf16 = pytest.mark.skipif(not HAS_OPENVINO or not _bf16_units(),
                                reason="OpenVINO with a CPU that has bfloat16 units (AVX512_BF16 or AMX) needed")


def _with_record(tmp_path, deltas):
    import onnx

    proto = onnx.load(str(OV_FILE))
    for entry in proto.metadata_props:
        if entry.key == "banet.int8_heldout":
            entry.value = json.dumps({"delta_psnr_db": deltas, "images": 26})
    path = tmp_path / "m_int8_ov.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("deltas, units, expected", [
    ({"openvino": -0.03, OPENVINO_INT8_BF16: -0.02}, True, {"inference_precision": "bf16"}),
    ({"openvino": -0.03, OPENVINO_INT8_BF16: -0.02}, False, {}),  # no units here
    ({"openvino": -0.03}, True, {}),  # never measured that way
    ({"openvino": -0.03, OPENVINO_INT8_BF16: -0.45}, True, {}),  # measured over the 0.3 dB budget
])
def test_int8_compute_follows_the_record_and_the_cpu(tmp_path, monkeypatch, deltas, units, expected):
    import runtime.backends.openvino_backend as backend

    monkeypatch.setattr(backend, "openvino_bf16_units", lambda device="CPU": units)
    path = _with_record(tmp_path, deltas)
    assert int8_compute(path) == expected
    assert precision_options("int8", path, "openvino", {}) == expected
    assert precision_options(None, path, "openvino", {}) == expected  # the INT8 file named as the model
    # what the user asked for wins; other backends and FP32 files get nothing
    assert precision_options("int8", path, "openvino", {"inference_precision": "f32"}) == {}
    assert precision_options("int8", path, "onnxruntime", {}) == {}
    assert int8_compute(DEFAULT_ONNX) == {}


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
def test_default_int8_on_openvino_lowers_its_float_layers_exactly_where_the_cpu_can():
    from tests.shipped_int8 import ov_file_holds_here

    measured_here = ov_file_holds_here()  # else the ort file runs (test_selection.py)
    with Deblurrer(precision="int8", backend="openvino", threads=1) as d:
        assert d.model_path == (OV_FILE if measured_here else ORT_FILE)
        # the ort file has no bf16 record (OpenVINO did not compile it so where it was made)
        assert d.backend.inference_precision == ("bf16" if _bf16_units() and measured_here else "f32")
    with Deblurrer(precision="int8", backend="openvino", threads=1, inference_precision="f32") as d:
        assert d.backend.inference_precision == "f32"


@needs_bf16
def test_ov_file_in_bf16_stays_close_to_its_f32_run_on_odd_shapes_and_batches():
    from runtime.backends.openvino_backend import OpenVinoBackend

    f32, bf16 = (OpenVinoBackend(OV_FILE, threads=1, inference_precision=p) for p in ("f32", "bf16"))
    assert "int8 in bf16" in bf16.describe()
    for shape in ((1, 64, 250), (2, 38, 50)):
        batch = photo_batch(*shape)
        assert psnr_db(f32.run(batch), bf16.run(batch)) >= 40.0, shape


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
def test_an_int8_file_openvino_cannot_compile_in_bf16_is_refused_in_one_line(monkeypatch):
    """OpenVINO 2026.4 on an Intel Xeon with AMX refused the ort file with bf16 float layers ("No suitable
    implementations"); whether another CPU does is OpenVINO's business, so its report is stood in for here: one line
    that names the file and the way out, not OpenVINO's multi-line C++ report."""
    import runtime.backends.openvino_backend as ov_backend

    monkeypatch.setattr(ov_backend, "check_lowering", lambda *args: None)  # as on a CPU with bfloat16 units
    backend = ov_backend.OpenVinoBackend(ORT_FILE, threads=1, inference_precision="bf16", compile_cache=None)

    def refuse(*args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/dev/plugin.cpp:54:\nCheck '!implementations.empty()' "
                           "failed at src/plugins/intel_cpu/src/nodes/executors/executor_factory.hpp:117:\nNo "
                           "suitable implementations.This may indicate that the provided memory descriptors are\n")

    monkeypatch.setattr(backend._core, "compile_model", refuse)
    with pytest.raises(BackendUnavailableError, match=r"^OpenVINO cannot compile INT8 banet_default_int8_ort.onnx "
                                                      r"with bf16 compute \(No suitable implementations.*\); run it "
                                                      r"with inference_precision='f32' or use its ov flavour") as info:
        backend.run(np.zeros((1, 3, 32, 32), np.float32))
    assert "\n" not in str(info.value)
    f32 = ov_backend.OpenVinoBackend(ORT_FILE, threads=1, compile_cache=None)
    monkeypatch.setattr(f32._core, "compile_model", refuse)
    with pytest.raises(RuntimeError, match="plugin.cpp"):  # f32 failing is not a refused lowering: left as it is
        f32.run(np.zeros((1, 3, 32, 32), np.float32))


@needs_bf16
def test_the_heldout_record_measures_what_openvino_compiles():
    from banet.metadata import read_onnx_metadata
    from banet.precision import heldout_record

    assert OPENVINO_INT8_BF16 in heldout_record(read_onnx_metadata(OV_FILE))["delta_psnr_db"]
    assert OPENVINO_INT8_BF16 not in heldout_record(read_onnx_metadata(ORT_FILE))["delta_psnr_db"]
