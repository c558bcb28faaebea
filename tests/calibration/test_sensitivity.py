"""Sensitivity search: blocks ranked by the drift each causes alone; the worst kept in float within a budget."""

import json

import pytest

from calibration.data import CalibrationSource
from calibration.sensitivity import main, probe_inputs, search

SOURCE = CalibrationSource(count=2, size=(32, 32))


@pytest.fixture(scope="module")
def probe():
    return probe_inputs(SOURCE, count=2, size=(32, 32))


def test_unreachable_budget_keeps_the_worst_blocks_in_float(tiny_onnx, probe):
    report = search(tiny_onnx, SOURCE, "ort", budget_db=200.0, probe=probe, max_excluded=2, threads=1)
    mse = [g.alone_mse for g in report.groups]
    assert mse == sorted(mse, reverse=True) and len(report.groups) >= 15
    assert {"BAM_1/BA.mask", "de_layer3", "global_residual"} <= {g.group for g in report.groups}
    assert not report.budget_met and 1 <= len(report.excluded) <= 2
    tried = [t["group"] for t in report.tried]
    assert tried == [g.group for g in report.groups][:len(tried)]  # tried worst first
    assert [s["group"] for s in report.steps] == report.excluded
    assert report.final_psnr_db > report.all_quantized_psnr_db  # keeping blocks in float helped
    assert "yes (step 1" in report.table()
    json.dumps(report.summary())


def test_met_budget_quantizes_everything(tiny_onnx, probe):
    report = search(tiny_onnx, SOURCE, "trt", budget_db=10.0, probe=probe, threads=1)
    assert report.budget_met and report.excluded == [] and report.tried == []
    assert report.final_psnr_db == report.all_quantized_psnr_db > 10


def test_cli_writes_json(tiny_onnx, tmp_path, capsys):
    code = main(["--onnx", str(tiny_onnx), "--drift-budget-db", "10", "--probe-count", "1", "--probe-size", "32x32",
                 "--calib-count", "2", "--calib-size", "32x32", "--json", str(tmp_path / "s.json")])
    assert code == 0 and "float blocks: none" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["budget_met"] is True
