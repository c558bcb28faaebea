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


def test_the_logs_name_the_output_not_its_temporary_file(tiny_onnx, tmp_path, caplog):
    """Round 17: ``calibration.quantize --output q_ort.onnx`` logged "no openvino-bf16 record for
    q_ort.partial.onnx: OpenVINO cannot compile INT8 q_ort.partial.onnx ...", a name the user never sees."""
    import logging
    import shutil

    path = quantize_int8(tiny_onnx, tmp_path / "tiny_int8_ort.onnx", CalibrationSource(count=2, size=(32, 32)),
                         "ort", verify_shapes=(), threads=1).path
    staged = shutil.copy(path, tmp_path / "q_ort.partial.onnx")
    with caplog.at_level(logging.INFO):
        measure_heldout(tiny_onnx, staged, threads=1, shown="q_ort.onnx")
    assert "q_ort.partial" not in caplog.text
    assert "q_ort.onnx" in caplog.text or "openvino-bf16" not in caplog.text  # named where a backend was skipped


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


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def _one_lesser_class(monkeypatch) -> tuple[str, str]:
    """The first int8 unit class below this CPU's (measured in a child process under its oneDNN cap), the only one
    measured here; the suite's default (tests/conftest.py) measures this CPU's class alone."""
    import banet.machine

    lesser = banet.machine.lesser_unit_classes()
    if not lesser:
        pytest.skip("this CPU has no int8 unit class below its own that oneDNN can run (or it cannot be read)")
    unit, cap = next(iter(lesser.items()))
    monkeypatch.setattr(banet.machine, "lesser_unit_classes", lambda *args, **kwargs: {unit: cap})
    monkeypatch.delenv("BANET_HELDOUT_UNITS")
    return unit, cap


@needs_openvino
def test_openvino_loss_is_recorded_per_int8_unit_class(tiny_onnx, tmp_path, monkeypatch):
    """OpenVINO's int8 kernels differ by CPU unit (the shipped ov file: -0.03 dB with AMX, -2.13 dB without), so
    the record holds OpenVINO's loss for this CPU's units and for the classes below them, each measured in a
    process whose oneDNN runs only that class's kernels."""
    from banet.machine import int8_units

    unit, _ = _one_lesser_class(monkeypatch)
    path = quantize_int8(tiny_onnx, tmp_path / "tiny_int8_trt.onnx", CalibrationSource(count=2, size=(32, 32)),
                         "trt", verify_shapes=(), threads=1).path
    record = heldout_record(read_onnx_metadata(path))
    by_units = record["openvino_by_units"]
    assert set(by_units) == {int8_units(), unit}
    assert by_units[int8_units()] == record["delta_psnr_db"]["openvino"]
    assert isinstance(by_units[unit], float) and by_units[unit] != 0.0  # measured there, not copied or defaulted
    unchanged = measure_heldout(tiny_onnx, tiny_onnx, threads=1)["openvino_by_units"]  # FP32: nothing lost anywhere
    assert set(unchanged) == {int8_units(), unit} and all(abs(d) < 1e-3 for d in unchanged.values())


@needs_openvino
def test_a_unit_class_that_cannot_be_measured_is_left_out_with_a_warning(tmp_path, monkeypatch, caplog):
    from banet.machine import int8_units
    from calibration.heldout import openvino_by_units

    _, cap = _one_lesser_class(monkeypatch)
    with caplog.at_level("WARNING", logger="calibration.heldout"):
        by_units = openvino_by_units(tmp_path / "missing_int8.onnx", 24.0, 2, 1, {int8_units(): -0.1})
    assert by_units == {int8_units(): -0.1}
    assert f"no OpenVINO record under ONEDNN_MAX_CPU_ISA={cap} for missing_int8.onnx" in caplog.text
