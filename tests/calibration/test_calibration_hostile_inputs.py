"""Robustness round 3 of the calibration commands: values that cannot be meant (a negative seed, a NaN drift
budget, an empty held-out set, negative threads), a calibration size the model was never exported for, a corrupt
image among the calibration photos, two --int8 files that would be one row, and Ctrl-C. Each is one ``error:``
line before any work (exit 2 for argparse's own refusals), and nothing is left behind.
"""

import numpy as np
import pytest

from calibration import drift, int8, quantize
from tests.cli_helpers import refused


@pytest.fixture(autouse=True)
def _no_default_export(monkeypatch, tmp_path):
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path / "engines"))


def argparse_refusal(capsys, main, argv: list[str], needle: str) -> None:
    """argparse's refusal: exit 2, its usage and one ``error:`` line naming the option, no traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert needle in err.strip().splitlines()[-1], err


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "argument --seed: must be at least 0"),  # before: numpy's ValueError traceback
    (["--auto-exclude", "nan"], "argument --auto-exclude: must be a positive number of dB"),  # before: kept blocks
    (["--auto-exclude", "0"], "argument --auto-exclude: must be a positive number of dB"),
])
def test_quantize_values_that_cannot_be_meant(tmp_path, tiny_onnx, capsys, args, needle):
    argparse_refusal(capsys, quantize.main, ["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"),
                                             "--flavour", "ort", *args], needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--limit", "0"], "argument --limit: must be at least 1"),  # before: IndexError traceback after the exports
    (["--limit", "-3"], "argument --limit: must be at least 1"),  # before: silently 23 of the 26 images
    (["--threads", "-1"], "argument --threads: must be at least 0"),  # before: OptionError traceback after the work
])
def test_drift_values_that_cannot_be_meant(tmp_path, tiny_onnx, capsys, args, needle):
    argparse_refusal(capsys, drift.main, ["--onnx", str(tiny_onnx), "--output", str(tmp_path / "r"), *args], needle)
    assert list(tmp_path.iterdir()) == []


def test_calibration_size_outside_the_exported_bounds(tmp_path, tiny_onnx, capsys):
    """Before: any size was taken (the built-in photos are resized up to it: --calib-size 100000 is a memory bomb)."""
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort",
                          "--calib-size", "8192x64", "--calib-count", "1"])
    refused(capsys, code, "calibration size 8192x64 is outside the 2..4096")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_calibration_image_is_one_line(tmp_path, tiny_onnx, capfd):
    """Before: OpenCV's own warning ("PNG input buffer is incomplete") came on stderr before the error line."""
    import cv2

    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cv2.imwrite(str(folder / "good.png"), np.full((64, 64, 3), 128, np.uint8))
    level = cv2.getLogLevel()
    try:
        cv2.setLogLevel(3)  # OpenCV's default (warnings), whatever an earlier test left
        code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort",
                              "--calib-dir", str(folder), "--calib-size", "32x32", "--calib-count", "2"])
    finally:
        cv2.setLogLevel(level)
    refused(capfd, code, "cut.png cannot be used")
    assert not (tmp_path / "q.onnx").exists()


def test_two_int8_files_that_would_be_one_row(tmp_path, tiny_onnx, capsys):
    """Before: the second --int8 file silently replaced the first in the report."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    for entry in model.metadata_props:
        if entry.key == "banet.precision":
            entry.value = "int8"
    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "tiny_int8_ort.onnx")
        onnx.save(model, str(files[-1]))
    refused(capsys, drift.main(["--onnx", str(tiny_onnx), "--int8", *map(str, files), "--output",
                                str(tmp_path / "r")]), "would both be the row 'INT8 ort'")
    assert not (tmp_path / "r" / "drift_report.json").exists()


def test_ctrl_c_while_quantizing_leaves_nothing(tmp_path, tiny_onnx, capsys, monkeypatch):
    """Before: a traceback, and <name>.partial.onnx left next to the output."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(int8, "verify_against_fp32", interrupted)
    out = tmp_path / "out"
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(out / "q.onnx"), "--flavour", "ort",
                          "--calib-count", "2", "--calib-size", "32x32"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted (Ctrl-C): the file in progress was not written"
    assert list(out.iterdir()) == []


def test_quantize_never_writes_over_its_fp32_input_or_a_non_onnx_name(tmp_path, tiny_onnx, capsys):
    """Before: --output equal to --onnx (with --force) replaced the FP32 reference by its INT8 model, and --output
    my.pth --force wrote an ONNX under a checkpoint's name."""
    import shutil

    fp32 = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, fp32)
    before = fp32.read_bytes()
    for output, message in ((fp32, "is the FP32 ONNX being quantized"), (tmp_path / "my.pth", "end in .onnx")):
        code = quantize.main(["--onnx", str(fp32), "--output", str(output), "--force", "--flavour", "ort",
                              "--calib-count", "2", "--calib-size", "32x32"])
        refused(capsys, code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"] and fp32.read_bytes() == before
    with pytest.raises(int8.QuantizeError, match="is the FP32 ONNX being quantized"):  # the library call too
        int8.quantize_int8(fp32, fp32, int8.CalibrationSource(count=1, size=(32, 32)), "ort", force=True)


@pytest.mark.parametrize("args, message", [
    (["--exclude", "de_layer3", "--auto-exclude", "45"], "--exclude and --auto-exclude both choose"),
    (["--percentile", "99.9"], "--percentile is for --method percentile"),
])
def test_quantize_options_that_would_be_ignored(tmp_path, tiny_onnx, capsys, args, message):
    """Before: --auto-exclude silently replaced the --exclude list, and --percentile without --method percentile was
    silently ignored (the file named and calibrated as if it had not been given)."""
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_quantize_never_writes_through_a_link_at_its_staging_name(tmp_path, tiny_onnx, capsys):
    """Before: ONNX Runtime wrote the quantized model through a symbolic link planted at <name>.partial.onnx."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "q.partial.onnx").symlink_to(victim)
    quantize.main(["--onnx", str(tiny_onnx), "--output", str(out / "q.onnx"), "--flavour", "ort", "--calib-count",
                   "2", "--calib-size", "32x32"])  # written, or refused by its drift check: either way, not there
    assert victim.read_text() == "not yours"
    assert not any(p.is_symlink() for p in out.iterdir())
