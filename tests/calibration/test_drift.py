"""Drift report on a small network: every precision row, restoration deltas, speed ratio, JSON and Markdown."""

import importlib.util
import json

import pytest

import banet.outputs
from banet.machine import cpu_name, int8_units
from banet.torch_backend import cpu_bf16_units
from calibration import drift
from calibration.data import CalibrationSource
from calibration.int8 import quantize_int8
from tests.calibration.conftest import TINY
from tests.full_disk import FullDisk


@pytest.fixture(scope="module")
def int8_model(tiny_onnx, tmp_path_factory, calibration_cache):
    path = tmp_path_factory.mktemp("drift") / "tiny_int8_ort.onnx"
    return quantize_int8(tiny_onnx, path, CalibrationSource(count=2, size=(32, 32)), "ort", verify_shapes=(),
                         threads=1).path


@pytest.fixture(scope="module")
def tiny_fp16(tiny_net, tiny_onnx):
    from export.onnx_export import ExportOptions, export_onnx

    path = tiny_onnx.with_name("tiny_fp16.onnx")
    if not path.exists():
        export_onnx(tiny_net, path, ExportOptions(precision="fp16", verify_shapes=[(1, 32, 32)]), "0" * 64, "tiny",
                    TINY)
    return path


def test_report_rows_speed_and_tables(tiny_net, tiny_onnx, tiny_fp16, int8_model, tmp_path, monkeypatch):
    monkeypatch.setattr(drift, "full_network_fp16", lambda: {"network": "stand-in", "note": "n", "results": {
        "emulated": {"worst_psnr_db": 90.0, "per_shape": {"1x8x8": 90.0}, "max_abs_error": 1e-3}}})
    from banet.checkpoint import file_sha256, save_checkpoint

    weights = save_checkpoint(tiny_net, tmp_path / "tiny.safetensors")
    report = drift.build_report(tiny_net, weights, TINY, tiny_onnx, tiny_fp16,
                                {"ort": int8_model}, limit=1, speed=True, full=True, threads=1,
                                speed_shape=(1, 64, 64), repeats=2)
    assert report["model"]["sha256"] == file_sha256(weights)
    rows = {r["name"]: r for r in report["rows"]}
    openvino = ({"FP32 OpenVINO", "FP32 OpenVINO, dynamic shapes", "INT8 ort OpenVINO",
                 "INT8 ort OpenVINO, dynamic shapes"} if importlib.util.find_spec("openvino") else set())
    if openvino and drift.openvino_forward(tiny_onnx, 1, inference_precision="bf16") is not None:
        openvino.add("FP32 OpenVINO in BF16")  # CPUs with bfloat16 units only
    bf16 = {"Checkpoint PyTorch in BF16"} if cpu_bf16_units() else set()  # likewise
    assert set(rows) == {"FP32 PyTorch (reference)", "FP32 ONNX", "FP16 ONNX", "FP16 PyTorch (emulated)",
                         "INT8 ort"} | openvino | bf16
    if bf16:  # the checkpoint in bfloat16: lowered (not bit-identical), within the drift budget
        assert 50 <= rows["Checkpoint PyTorch in BF16"]["drift_psnr_db"] < 150
    reference = rows["FP32 PyTorch (reference)"]
    if openvino:  # the same files on OpenVINO: FP32 as exact as ONNX Runtime's, INT8 close to ONNX Runtime's INT8
        assert rows["FP32 OpenVINO"]["drift_psnr_db"] > 100
        assert rows["FP32 OpenVINO, dynamic shapes"]["drift_psnr_db"] > 100
        assert abs(rows["INT8 ort OpenVINO"]["drift_psnr_db"] - rows["INT8 ort"]["drift_psnr_db"]) < 6
    assert rows["FP32 ONNX"]["drift_psnr_db"] > 100 and abs(rows["FP32 ONNX"]["delta_psnr_db"]) < 1e-3
    assert 50 < rows["FP16 PyTorch (emulated)"]["drift_psnr_db"] < 150
    assert 20 < rows["INT8 ort"]["drift_worst_psnr_db"] <= rows["INT8 ort"]["drift_psnr_db"] < 80
    # the pixels a user gets: INT8 changes some 8-bit values by a level or more, FP32 ONNX next to none
    assert 0 < rows["INT8 ort"]["changed_8bit"] <= 1 and rows["INT8 ort"]["max_change_8bit"] >= 1
    assert rows["FP32 ONNX"]["changed_8bit"] < 1e-3 and rows["FP32 ONNX"]["max_change_8bit"] <= 1
    assert (reference["changed_8bit"], reference["max_change_8bit"]) == (0, 0)
    for row in rows.values():
        assert row["delta_psnr_db"] == pytest.approx(row["psnr"] - reference["psnr"])
        assert 0 < row["ssim"] <= 1
    assert report["heldout"]["images"] == 1
    assert [r["threads"] for r in report["speed"]["results"]] == [1, 2]
    assert report["speed"]["results"][0]["speedup_vs_fp32"]["INT8 ort"] > 0
    assert set(report["acceptance"]) >= {"int8_ort_delta_psnr_db", "int8_ort_speedup_1_thread"}
    assert report["int8"]["ort"]["calibration"]["count"] == 2
    text = drift.markdown(report)
    assert report["profile"]["INT8 ort"]["ops"][0]["op"]  # where the time goes, by op type
    assert "| INT8 ort |" in text and "speed-up" in text and "stand-in" in text and "QLinearConv" in text
    int8 = rows["INT8 ort"]
    assert "8-bit values changed" in text and drift.changed_text(int8["changed_8bit"], int8["max_change_8bit"]) in text
    # where it holds: OpenVINO's int8 kernels differ by CPU unit (the trt file lost 3.68 dB on OpenVINO without AMX)
    assert (report["cpu"], report["int8_units"]) == (cpu_name(), int8_units())
    assert f"CPU: {cpu_name()} (int8 units: {int8_units()})" in text
    json.dumps(report)


def test_cli_writes_json_and_markdown(tiny_checkpoint, tiny_onnx, int8_model, tmp_path):
    out = tmp_path / "drift"
    code = drift.main(["--weights", str(tiny_checkpoint), "--onnx", str(tiny_onnx), "--int8", str(int8_model),
                       "--no-fp16", "--no-speed", "--limit", "1", "--output", str(out)])
    assert code == 0
    report = json.loads((out / "drift_report.json").read_text())
    openvino = (["FP32 OpenVINO", "FP32 OpenVINO, dynamic shapes", "INT8 ort OpenVINO",
                 "INT8 ort OpenVINO, dynamic shapes"] if importlib.util.find_spec("openvino") else [])
    if openvino and drift.openvino_forward(tiny_onnx, 1, inference_precision="bf16") is not None:
        openvino.append("FP32 OpenVINO in BF16")  # CPUs with bfloat16 units only
    bf16 = ["Checkpoint PyTorch in BF16"] if cpu_bf16_units() else []  # likewise
    expected = ["FP32 PyTorch (reference)", "FP32 ONNX", "INT8 ort"] + openvino + bf16
    assert [r["name"] for r in report["rows"]] == expected
    assert "| FP32 ONNX |" in (out / "drift_report.md").read_text()


def test_cli_reports_a_bad_calibration_folder(tiny_checkpoint, tiny_onnx, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = drift.main(["--weights", str(tiny_checkpoint), "--onnx", str(tiny_onnx), "--no-fp16", "--limit", "1",
                       "--calib-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert code == 1 and "holds no images" in capsys.readouterr().err


def test_cli_refuses_an_onnx_of_other_weights(tiny_net, tiny_onnx, tmp_path, capsys):
    """A newer checkpoint next to an ONNX exported from the old one: measured through it, the report would show
    the old network's numbers; refused instead."""
    import copy

    import torch

    from banet.checkpoint import save_checkpoint

    newer = copy.deepcopy(tiny_net)
    with torch.no_grad():
        newer.de_layer3[0].bias.add_(0.01)
    weights = save_checkpoint(newer, tmp_path / "tiny.safetensors")
    code = drift.main(["--weights", str(weights), "--onnx", str(tiny_onnx), "--no-fp16", "--limit", "1",
                       "--output", str(tmp_path / "o")])
    assert code == 1 and "was exported from other weights" in capsys.readouterr().err


def _fail_on_the_markdown(real):
    """A stand-in for create_partial whose file for the second of the pair, drift_report.md, cannot be written
    (a full disk)."""
    def create(path):
        handle = real(path)
        return FullDisk(handle) if path.name.startswith("drift_report.md") else handle

    return create


def test_the_pair_is_written_together_or_not_at_all(tmp_path, monkeypatch):
    old = {tmp_path / "drift_report.json": b'{"old": 1}', tmp_path / "drift_report.md": b"# old\n"}
    for path, data in old.items():
        path.write_bytes(data)
    new = {path: b"new " + path.name.encode() for path in old}
    monkeypatch.setattr(banet.outputs, "create_partial", _fail_on_the_markdown(banet.outputs.create_partial))
    with pytest.raises(OSError) as info:
        drift.write_together(new)
    assert info.value.filename == str(tmp_path / "drift_report.md")
    assert {path: path.read_bytes() for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift_report.json", "drift_report.md"]  # no temporaries
    monkeypatch.undo()
    drift.write_together(new)
    assert {path: path.read_bytes() for path in new} == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift_report.json", "drift_report.md"]


def test_cli_keeps_the_old_pair_when_the_second_file_cannot_be_written(tiny_checkpoint, tiny_onnx, int8_model,
                                                                       tmp_path, monkeypatch, capsys):
    """A full disk on drift_report.md used to leave a new .json beside the old .md; now both stay old."""
    out = tmp_path / "drift"
    out.mkdir()
    old = {"drift_report.json": '{"old": 1}', "drift_report.md": "# old\n"}
    for name, text in old.items():
        (out / name).write_text(text)
    monkeypatch.setattr(drift, "build_report", lambda *args, **kwargs: {"new": 1})
    monkeypatch.setattr(drift, "markdown", lambda report: "# new\n")
    monkeypatch.setattr(banet.outputs, "create_partial", _fail_on_the_markdown(banet.outputs.create_partial))
    code = drift.main(["--weights", str(tiny_checkpoint), "--onnx", str(tiny_onnx), "--int8", str(int8_model),
                       "--no-fp16", "--no-speed", "--limit", "1", "--output", str(out), "--force"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on device writing ") and "drift_report.md" in err, err
    assert "\n" not in err
    assert {p.name: p.read_text() for p in out.iterdir()} == old  # the old pair, and no temporaries


def test_cli_refuses_an_int8_file_of_other_weights(int8_model, tmp_path, capsys):
    """The tiny network's INT8 file given with the default model: the report was titled for the default model and
    scored the tiny one's file as its INT8 row (-2.7 dB), exit 0; benchmarks.run then copied those numbers."""
    code = drift.main(["--int8", str(int8_model), "--no-fp16", "--no-speed", "--limit", "1",
                       "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "was exported from other weights than" in err and int8_model.name in err
    assert not (tmp_path / "o" / "drift_report.json").exists()


def test_cli_refuses_calibration_options_it_would_ignore(int8_model, tiny_checkpoint, tiny_onnx, tmp_path, capsys):
    """With --int8 nothing is quantized: --calib-dir, --calib-count... were ignored without a word, exit 0."""
    import pytest

    with pytest.raises(SystemExit) as stopped:
        drift.main(["--weights", str(tiny_checkpoint), "--onnx", str(tiny_onnx), "--int8", str(int8_model),
                    "--calib-count", "7", "--seed", "3", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--calib-count, --seed choose how the INT8 files are quantized" in err


def test_cli_waits_for_a_default_int8_file_being_quantized(int8_model, tiny_checkpoint, tiny_onnx, tmp_path,
                                                          monkeypatch):
    """drift making the default INT8 file while calibration.quantize wrote it was refused with "another run is
    writing ...; write to another --output", an option drift does not have for that file. It now waits for it."""
    import shutil
    import threading
    import time

    import calibration.int8

    fp32 = shutil.copy(tiny_onnx, tmp_path / "tiny.onnx")
    default = calibration.int8.default_int8_path(fp32, "ort")
    locked, release = threading.Event(), threading.Event()

    def quantize_run():  # another process's calibration.quantize, writing the file under its lock
        with banet.outputs.output_lock(default):
            locked.set()
            time.sleep(0.5)
            shutil.copy(int8_model, default)

    def not_again(*args, **kwargs):
        raise AssertionError("quantized again while another run was writing the file")

    monkeypatch.setattr(calibration.int8, "FLAVOURS", {"ort": calibration.int8.FLAVOURS["ort"]})
    monkeypatch.setattr(calibration.int8, "quantize_int8", not_again)
    writer = threading.Thread(target=quantize_run)
    writer.start()
    locked.wait(10)
    try:
        code = drift.main(["--weights", str(tiny_checkpoint), "--onnx", str(fp32), "--no-fp16", "--no-speed",
                           "--limit", "1", "--output", str(tmp_path / "o")])
    finally:
        release.set()
        writer.join()
    assert code == 0
    assert "INT8 ort" in [r["name"] for r in json.loads((tmp_path / "o" / "drift_report.json").read_text())["rows"]]
