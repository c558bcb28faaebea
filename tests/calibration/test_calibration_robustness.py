"""Real inputs must not break the calibration commands (issue 14): every missing, foreign, truncated or misplaced
path and every bad calibration option is refused in one line (exit 1, ``error:``, no traceback), before any work,
and nothing is exported or written under a mistyped name. Only the default FP32 path (no --onnx) is ever made.
"""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from calibration import drift, fp16, quantize, sensitivity
from tests.cli_helpers import refused

ROOT = Path(__file__).resolve().parents[2]
RANDOM_BYTES = random.Random(0).randbytes(4096)


@pytest.fixture
def bad(tmp_path_factory, tiny_onnx) -> dict[str, Path]:
    """The kinds of bad file users hand over, in a folder of their own."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path_factory.mktemp("bad")
    data = tiny_onnx.read_bytes()
    files = {"missing": folder / "models" / "mistyped.onnx", "folder": folder / "a_folder.onnx",
             "random": folder / "random.onnx", "truncated": folder / "truncated.onnx",
             "foreign": folder / "foreign.onnx", "fp16": folder / "tiny_fp16.onnx"}
    files["folder"].mkdir()
    files["random"].write_bytes(RANDOM_BYTES)
    files["truncated"].write_bytes(data[: len(data) // 2])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "foreign",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph), str(files["foreign"]))
    model = onnx.load(str(tiny_onnx))
    for entry in model.metadata_props:  # the same graph, recorded as an FP16 export
        if entry.key == "banet.precision":
            entry.value = "fp16"
    onnx.save(model, str(files["fp16"]))
    return files


@pytest.fixture(autouse=True)
def _no_default_export(monkeypatch, tmp_path):
    """engines/ stays untouched: a default FP32 path would be made in this test's folder, never the repository's."""
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path / "engines"))


def listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


ONNX_PROBLEMS = [
    ("missing", "ONNX file not found; export it with python export/to_onnx.py --output"),
    ("folder", "is a folder, not an FP32 ONNX file; name the file"),  # before: "export it with ... --output DIR"
    ("random", "not a readable ONNX model"),
    ("truncated", "not a readable ONNX model"),
    ("foreign", "metadata lacks 'banet.schema'"),
    ("fp16", "is a fp16 model"),
]


# -- calibration.quantize ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, message", ONNX_PROBLEMS)
def test_quantize_refuses_a_bad_onnx_and_never_makes_one(tmp_path, bad, capsys, kind, message):
    before = listing(bad[kind].parent)
    output = tmp_path / "q.onnx"
    code = quantize.main(["--onnx", str(bad[kind]), "--output", str(output), "--flavour", "ort"])
    refused(capsys, code, message)
    assert listing(bad[kind].parent) == before  # no export to the mistyped name, inputs byte for byte
    assert not output.exists() and not (tmp_path / "engines").exists()


def test_quantize_refuses_missing_weights(tmp_path, tiny_onnx, capsys):
    code = quantize.main(["--onnx", str(tiny_onnx), "--weights", str(tmp_path / "mistyped.safetensors"),
                          "--output", str(tmp_path / "q.onnx"), "--flavour", "ort"])
    refused(capsys, code, "mistyped.safetensors: checkpoint file not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("calib, message", [
    ("missing", "does not exist"),
    ("file", "is not a folder"),
    ("empty", "holds no images"),
    ("no images", "holds no images"),
])
def test_quantize_refuses_a_bad_calibration_folder_first(tmp_path, tiny_onnx, capsys, calib, message):
    folder = tmp_path / "calib"
    if calib == "file":
        folder.write_text("not a folder")
    elif calib != "missing":
        folder.mkdir()
        if calib == "no images":
            (folder / "notes.txt").write_text("photos go here")
    code = quantize.main(["--calib-dir", str(folder), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort"])
    refused(capsys, code, message)
    assert not (tmp_path / "q.onnx").exists()
    assert not (tmp_path / "engines").exists()  # refused before the default FP32 ONNX was exported


@pytest.mark.parametrize("args, message", [
    (["--calib-size", "7x7"], "not a network input size"),
    (["--calib-size", "0"], "not a network input size"),
    (["--calib-count", "0"], "calibration count must be >= 1"),
    (["--calib-batch", "0"], "calibration batch must be >= 1"),
])
def test_quantize_refuses_bad_calibration_values(tmp_path, tiny_onnx, capsys, args, message):
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort", *args])
    refused(capsys, code, message)
    assert not (tmp_path / "q.onnx").exists()


def test_unparseable_calibration_size_is_a_command_line_error(tmp_path, tiny_onnx, capsys):
    """Not a size at all: argparse's usage and one ``error:`` line, exit 2 (a bad command line), no traceback."""
    with pytest.raises(SystemExit) as info:
        quantize.main(["--onnx", str(tiny_onnx), "--calib-size", "big"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("error: argument --calib-size: expected HxW such as 720x1280 (or "
                                                 "one number for a square), got 'big'")


def test_quantize_output_folder_or_existing_file_is_refused_first(tmp_path, tiny_onnx, capsys):
    (tmp_path / "out.onnx").mkdir()
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "out.onnx"), "--flavour", "ort"])
    refused(capsys, code, "is a directory")
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's file")
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(mine), "--flavour", "ort"])
    refused(capsys, code, "exists; pass --force")
    assert mine.read_bytes() == b"the user's file"


# -- calibration.drift, calibration.sensitivity, calibration.fp16 --------------------------------------------------
@pytest.mark.parametrize("kind, message", [
    ("missing", "ONNX file not found; make it with python -m calibration.quantize"),
    ("random", "not a readable ONNX model"),
    ("fp16", "is a fp16 model, not an INT8 Q/DQ one"),
])
def test_drift_refuses_a_bad_int8_file(tmp_path, bad, capsys, kind, message):
    before = listing(bad[kind].parent)
    code = drift.main(["--int8", str(bad[kind]), "--output", str(tmp_path / "report")])
    refused(capsys, code, message)
    assert listing(bad[kind].parent) == before


def test_drift_refuses_a_mistyped_onnx_and_weights(tmp_path, bad, capsys):
    refused(capsys, drift.main(["--onnx", str(bad["missing"]), "--output", str(tmp_path / "r")]),
            "ONNX file not found")
    assert not bad["missing"].exists()
    refused(capsys, drift.main(["--weights", str(tmp_path / "mistyped.pth"), "--output", str(tmp_path / "r")]),
            "checkpoint file not found")


def test_drift_refuses_a_file_as_its_output_folder(tmp_path, tiny_onnx, capsys):
    (tmp_path / "report").write_text("a file")
    refused(capsys, drift.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "report")]),
            "cannot create output folder")
    assert (tmp_path / "report").read_text() == "a file"


@pytest.mark.parametrize("kind, message", [("missing", "ONNX file not found"), ("random", "not a readable ONNX")])
def test_sensitivity_refuses_a_bad_onnx(bad, capsys, kind, message):
    refused(capsys, sensitivity.main(["--onnx", str(bad[kind])]), message)
    assert not bad["missing"].exists()


def test_sensitivity_refuses_a_folder_as_its_report(tmp_path, tiny_onnx, capsys):
    refused(capsys, sensitivity.main(["--onnx", str(tiny_onnx), "--json", str(tmp_path)]), "is a directory")


@pytest.mark.parametrize("kind, message", [
    ("missing", "checkpoint file not found"),
    ("random", "not a PyTorch checkpoint"),
    ("folder", "not a file"),
])
def test_fp16_refuses_bad_weights(tmp_path, capsys, kind, message):
    weights = {"missing": tmp_path / "mistyped.pth", "random": tmp_path / "random.pth", "folder": tmp_path}[kind]
    if kind == "random":
        weights.write_bytes(RANDOM_BYTES)
    refused(capsys, fp16.main(["--weights", str(weights)]), message)


def test_fp16_refuses_a_folder_as_its_report_before_measuring(tmp_path, tiny_checkpoint, capsys):
    refused(capsys, fp16.main(["--weights", str(tiny_checkpoint), "--json", str(tmp_path)]), "is a directory")


# -- the real command line -----------------------------------------------------------------------------------------
def test_command_line_mistyped_onnx_prints_no_traceback_and_exports_nothing(tmp_path):
    """The tester's case: ``--onnx models/missing.onnx`` used to export the default model to that name."""
    command = [sys.executable, "-m", "calibration.quantize", "--onnx", str(tmp_path / "missing.onnx"), "--output",
               str(tmp_path / "q.onnx"), "--flavour", "trt"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "missing.onnx: ONNX file not found" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_quantize_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_onnx, capsys, monkeypatch):
    import errno
    import os

    import onnx

    real_save = onnx.save

    def full_save(proto, path, *args, **kwargs):
        if not str(path).endswith(".partial.onnx"):  # ONNX Runtime's own temporary files are not ours
            return real_save(proto, path, *args, **kwargs)
        real_save(proto, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full_save)
    code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort",
                          "--calib-count", "2", "--calib-size", "32x32"])
    refused(capsys, code, "no space left on device writing", "q.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_fewer_images_than_requested_is_counted_as_it_is(tmp_path, tiny_onnx, caplog):
    import json
    import logging

    import cv2
    import numpy as np
    import onnx

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (48, 48, 3), np.uint8))
    with caplog.at_level(logging.INFO):
        code = quantize.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "q.onnx"), "--flavour", "ort",
                              "--calib-dir", str(folder), "--calib-size", "32x32", "--calib-count", "32"])
    assert code == 0
    assert "holds 3 images, fewer than the 32 requested" in caplog.text
    # before: "calibrating (minmax, ort): 32 x 32x32 from ..." and a record of 32 images, of a 3-image folder
    assert "3 x 32x32 from" in caplog.text and "32 x 32x32" not in caplog.text
    record = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert json.loads(record["banet.int8_calibration"])["count"] == 3


def test_hidden_files_in_a_calibration_folder_are_left_out(tmp_path):
    import cv2
    import numpy as np

    from calibration.data import list_images

    folder = tmp_path / "calib"
    (folder / ".thumbnails").mkdir(parents=True)
    cv2.imwrite(str(folder / "IMG_0001.png"), np.zeros((16, 16, 3), np.uint8))
    (folder / "._IMG_0001.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS metadata: no image
    cv2.imwrite(str(folder / ".thumbnails" / "t.png"), np.zeros((4, 4, 3), np.uint8))
    assert list_images(folder) == [folder / "IMG_0001.png"]  # before: the ._ file too, which failed calibration
