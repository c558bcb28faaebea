"""The calibration commands never replace a file the user already has unless asked (banet.outputs' rule).

Before: ``calibration.sensitivity --json F``, ``calibration.fp16 --json F`` and ``calibration.drift --output DIR``
replaced an existing report without ``--force`` (they had no ``--force``), and wrote it in place (a full disk left
it half written); ``calibration.quantize --flavour both`` refused an existing ``trt`` file only after the ``ort``
one had been calibrated and written. Now each existing output is refused, in one line naming it, before any work
(the expensive parts are replaced by stand-ins here that record whether they ran), replaced with ``--force``, and
written whole or not at all. ``out/drift``, the drift report's own default folder, is refreshed by every run.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import banet.checkpoint
import banet.outputs
import calibration.cli_common
from calibration import drift, fp16, quantize, sensitivity

OLD = '{"mine": "a report the user keeps"}'


def refused_before_work(capsys, code: int, ran: list, path: Path) -> None:
    """Exit 1, one ``error:`` line naming ``path`` and saying how to replace it, no work done, the file untouched."""
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.count("\n") == 0 and err.startswith("error: "), err
    assert str(path) in err and "--force" in err, err
    assert ran == [], "the expensive work ran before the existing output was refused"
    assert path.read_text() == OLD


def no_space(monkeypatch) -> None:
    """Every atomic write fails as on a full disk, at the last step (the rename into place)."""
    def full(partial, path, replace=True, ours=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(banet.outputs, "commit_partial", full)  # write_atomic's, and the drift report pair's


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


@pytest.mark.parametrize("command", [sensitivity, fp16, drift, quantize], ids=lambda m: m.__name__)
def test_every_command_offers_force_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--force" in help_text and "already" in help_text, help_text  # says what it replaces


# -- calibration.sensitivity --json ------------------------------------------------------------------------------
@pytest.fixture
def fake_search(monkeypatch, tmp_path):
    """sensitivity's probe images, FP32 ONNX and search replaced by stand-ins; the list records each search."""
    ran: list = []
    report = SimpleNamespace(table=lambda: "table", summary=lambda: {"excluded": ["de_layer3"], "budget_met": True},
                             budget_met=True)
    monkeypatch.setattr(sensitivity, "probe_inputs", lambda *a, **k: ran.append("probe") or ([], "stand-in"))
    monkeypatch.setattr(calibration.cli_common, "ensure_fp32_onnx", lambda *a: tmp_path / "model.onnx")
    monkeypatch.setattr(sensitivity, "search", lambda *a, **k: ran.append("search") or report)
    return ran


def test_sensitivity_refuses_an_existing_json_before_the_search(fake_search, tmp_path, capsys):
    target = tmp_path / "s.json"
    target.write_text(OLD)
    refused_before_work(capsys, sensitivity.main(["--json", str(target)]), fake_search, target)


def test_sensitivity_replaces_it_with_force(fake_search, tmp_path, capsys):
    target = tmp_path / "s.json"
    target.write_text(OLD)
    assert sensitivity.main(["--json", str(target), "--force"]) == 0, capsys.readouterr().err
    assert json.loads(target.read_text()) == {"excluded": ["de_layer3"], "budget_met": True}
    assert leftovers(tmp_path) == []


def test_sensitivity_writes_whole_or_not_at_all(fake_search, tmp_path, capsys, monkeypatch):
    target = tmp_path / "s.json"
    target.write_text(OLD)
    no_space(monkeypatch)
    assert sensitivity.main(["--json", str(target), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on device writing") and str(target) in err, err
    assert target.read_text() == OLD and leftovers(tmp_path) == []


# -- calibration.fp16 --json -------------------------------------------------------------------------------------
@pytest.fixture
def fake_measure(monkeypatch):
    """fp16's measurement replaced by a stand-in (the tiny checkpoint still loads); the list records each run."""
    ran: list = []
    rows = {"emulated": {"worst_psnr_db": 80.0, "per_shape": {"1x32x32": 80.0}, "max_abs_error": 1e-3}}
    monkeypatch.setattr(fp16, "measure", lambda *a, **k: ran.append("measure") or rows)
    return ran


def test_fp16_refuses_an_existing_json_before_measuring(fake_measure, tiny_checkpoint, tmp_path, capsys):
    target = tmp_path / "fp16.json"
    target.write_text(OLD)
    refused_before_work(capsys, fp16.main(["--weights", str(tiny_checkpoint), "--json", str(target)]),
                        fake_measure, target)


def test_fp16_replaces_it_with_force(fake_measure, tiny_checkpoint, tmp_path, capsys):
    target = tmp_path / "fp16.json"
    target.write_text(OLD)
    assert fp16.main(["--weights", str(tiny_checkpoint), "--json", str(target), "--force"]) == 0
    report = json.loads(target.read_text())
    assert [rows["emulated"]["worst_psnr_db"] for rows in report.values()] == [80.0]
    assert leftovers(tmp_path) == []


def test_fp16_writes_whole_or_not_at_all(fake_measure, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    target = tmp_path / "fp16.json"
    target.write_text(OLD)
    no_space(monkeypatch)
    assert fp16.main(["--weights", str(tiny_checkpoint), "--json", str(target), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on device writing") and str(target) in err, err
    assert target.read_text() == OLD and leftovers(tmp_path) == []


# -- calibration.drift --output ----------------------------------------------------------------------------------
@pytest.fixture
def fake_drift(monkeypatch, tmp_path):
    """drift's checkpoint, FP32 ONNX and report replaced by stand-ins; the list records each report built."""
    ran: list = []
    monkeypatch.setattr(banet.checkpoint, "load_checkpoint", lambda *a: SimpleNamespace(model=None, config=None))
    monkeypatch.setattr(calibration.cli_common, "ensure_fp32_onnx", lambda *a: tmp_path / "model.onnx")
    monkeypatch.setattr(drift, "build_report", lambda *a, **k: ran.append("report") or {"rows": ["new"]})
    monkeypatch.setattr(drift, "markdown", lambda report: "# new report\n")
    return ran


def run_drift(*args: str) -> int:
    # --int8 with no files: no INT8 row, so nothing is quantized; --no-fp16: nothing exported
    return drift.main(["--weights", "w.safetensors", "--int8", "--no-fp16", "--no-speed", *args])


@pytest.mark.parametrize("name", ["drift_report.json", "drift_report.md"])
def test_drift_refuses_a_report_in_a_folder_you_named(fake_drift, tmp_path, capsys, name):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(OLD)
    refused_before_work(capsys, run_drift("--output", str(folder)), fake_drift, folder / name)
    assert sorted(p.name for p in folder.iterdir()) == [name]  # the other file was not written either


def test_drift_replaces_it_with_force(fake_drift, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "drift_report.json").write_text(OLD)
    (folder / "drift_report.md").write_text(OLD)
    assert run_drift("--output", str(folder), "--force") == 0, capsys.readouterr().err
    assert json.loads((folder / "drift_report.json").read_text()) == {"rows": ["new"]}
    assert (folder / "drift_report.md").read_text() == "# new report\n"
    assert leftovers(folder) == []


def test_drift_refreshes_its_own_default_folder(fake_drift, tmp_path, capsys, monkeypatch):
    """out/drift is the command's own folder (as a build folder): each run replaces the report there."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "out" / "drift"
    folder.mkdir(parents=True)
    (folder / "drift_report.json").write_text(OLD)
    assert run_drift() == 0, capsys.readouterr().err
    assert json.loads((folder / "drift_report.json").read_text()) == {"rows": ["new"]}
    assert fake_drift == ["report"]


def test_drift_writes_whole_or_not_at_all(fake_drift, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "drift_report.json").write_text(OLD)
    no_space(monkeypatch)
    assert run_drift("--output", str(folder), "--force") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on device writing") and "drift_report.json" in err, err
    assert (folder / "drift_report.json").read_text() == OLD and leftovers(folder) == []


# -- calibration.quantize (default files) ------------------------------------------------------------------------
@pytest.fixture
def fake_quantize(monkeypatch, tmp_path):
    """quantize's FP32 ONNX and quantizer replaced by stand-ins; the list records each flavour quantized."""
    ran: list = []
    fp32 = tmp_path / "model.onnx"
    monkeypatch.setattr(quantize, "ensure_fp32_onnx", lambda *a: fp32)

    def quantize_int8(fp32_onnx, output, source, flavour, *args, **kwargs):
        ran.append(flavour)
        Path(output).write_text("int8")
        return SimpleNamespace(verification={}, path=output, quantized_nodes=[], excluded_groups=[], seconds=0.0,
                               tensorrt_parse={})

    monkeypatch.setattr(quantize, "quantize_int8", quantize_int8)
    return ran


def test_quantize_both_refuses_an_existing_file_before_quantizing_any(fake_quantize, tmp_path, capsys):
    """Before: the ort file was calibrated and written, then the existing trt one refused (exit 1, half done)."""
    trt = tmp_path / "model_int8_trt.onnx"
    trt.write_text(OLD)
    refused_before_work(capsys, quantize.main(["--flavour", "both"]), fake_quantize, trt)
    assert not (tmp_path / "model_int8_ort.onnx").exists()


def test_quantize_both_replaces_them_with_force(fake_quantize, tmp_path, capsys):
    trt = tmp_path / "model_int8_trt.onnx"
    trt.write_text(OLD)
    assert quantize.main(["--flavour", "both", "--force"]) == 0, capsys.readouterr().err
    assert fake_quantize == ["ort", "trt"] and trt.read_text() == "int8"
