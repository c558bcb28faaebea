"""Every INT8 file records what it costs on the held-out photos, per CPU backend, measured when it is written."""

import importlib.util

import numpy as np
import pytest

from banet.metadata import read_onnx_metadata
from banet.precision import heldout_record
from calibration.data import CalibrationSource
from calibration.heldout import measure_heldout, run_heldout
from calibration.int8 import quantize_int8


def test_quantized_file_carries_its_heldout_cost(tiny_onnx, tmp_path):
    path = quantize_int8(tiny_onnx, tmp_path / "tiny_int8_ort.onnx", CalibrationSource(count=2, size=(32, 32)),
                         "ort", verify_shapes=(), threads=1).path
    record = heldout_record(read_onnx_metadata(path))
    assert record is not None and record["images"] == 3  # tests/conftest.py: 3 held-out images per file
    from banet.machine import cpu_name, int8_units

    assert (record["cpu"], record["int8_units"]) == (cpu_name(), int8_units())  # where the record holds
    backends = {"onnxruntime"} | ({"openvino"} if importlib.util.find_spec("openvino") else set())
    # and OpenVINO with bf16 float layers where this CPU has the units and OpenVINO compiles the file so
    assert backends <= set(record["delta_psnr_db"]) <= backends | {"openvino-bf16"}
    # the record is the measurement: recomputing it gives the same numbers
    again = measure_heldout(tiny_onnx, path, threads=1)
    assert again["delta_psnr_db"]["onnxruntime"] == pytest.approx(record["delta_psnr_db"]["onnxruntime"], abs=1e-3)
    assert record["delta_psnr_db"]["onnxruntime"] != 0.0  # INT8 changes the output: the measurement is not a default


def test_unchanged_model_costs_nothing(tiny_onnx):
    record = measure_heldout(tiny_onnx, tiny_onnx, threads=1)
    assert all(delta == pytest.approx(0.0, abs=1e-4) for delta in record["delta_psnr_db"].values())
    assert record["fp32_psnr_db"] > 0


def test_run_heldout_without_ssim_matches_with_ssim(tiny_onnx):
    from calibration.heldout import _heldout_pairs
    from runtime.backends.onnxruntime_backend import open_session, session_forward

    forward = session_forward(open_session(tiny_onnx, ["CPUExecutionProvider"], 1))
    pairs = _heldout_pairs()[:2]
    raws_a, with_ssim = run_heldout(forward, pairs)
    raws_b, without = run_heldout(forward, pairs, with_ssim=False)
    assert "ssim_deblurred" in with_ssim and "ssim_deblurred" not in without
    assert with_ssim["psnr_deblurred"] == without["psnr_deblurred"]
    assert all(np.array_equal(a, b) for a, b in zip(raws_a, raws_b))
