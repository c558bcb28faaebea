"""A command never writes over a file it reads, even with ``--force`` (banet.outputs' rule: a user's file is never
lost), however the two paths are spelled: the same name, ``sub/../name``, a symbolic link, a hard link.

Before: ``calibration.sensitivity --json F --force`` wrote its report over its own ``--onnx`` or ``--weights``,
``calibration.fp16 --json F --force`` over its ``--weights``, ``calibration.drift --output DIR --force`` over an
``--int8`` file named ``DIR/drift_report.md``; ``calibration.quantize`` compared ``--output`` with ``--onnx`` only
after exporting/reading it and not with ``--weights``; ``export/to_onnx.py`` had its own copy of the check (resolved
paths only, so a hard link passed) and the TensorRT planner another. Now one check,
:func:`banet.outputs.check_not_input` (``check_output(..., inputs=...)``), refuses them all in one line naming both
paths, before any work (the expensive parts are stand-ins here that fail the test if they run).

And ``calibration.quantize --list-groups`` (which writes nothing) no longer refuses an existing ``--output``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import banet.checkpoint
import banet.outputs
import calibration.cli_common
from calibration import drift, fp16, quantize, sensitivity
from tests.cli_helpers import refused

ONNX_BYTES = b"the user's FP32 ONNX"
WEIGHTS_BYTES = b"the user's checkpoint"


class Refused(Exception):
    pass


@pytest.fixture
def files(tmp_path, monkeypatch):
    """An ONNX and a checkpoint (any bytes: the refusal comes before they are read), and stand-ins for every
    expensive step that fail the test if they run."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(ONNX_BYTES)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(WEIGHTS_BYTES)
    (tmp_path / "sub").mkdir()

    def started(*args, **kwargs):
        pytest.fail("the work started before the output was refused")

    for module in (sensitivity, quantize, drift, calibration.cli_common):
        if hasattr(module, "ensure_fp32_onnx"):
            monkeypatch.setattr(module, "ensure_fp32_onnx", started)
    monkeypatch.setattr(sensitivity, "search", started)
    monkeypatch.setattr(banet.checkpoint, "load_checkpoint", started)
    return onnx, weights


def untouched(onnx: Path, weights: Path) -> None:
    assert onnx.read_bytes() == ONNX_BYTES and weights.read_bytes() == WEIGHTS_BYTES


def spellings(target: Path) -> list[Path]:
    """Other names of ``target``: itself, through ``sub/..``, a symbolic link, a hard link."""
    link = target.with_name("link" + target.suffix)
    link.symlink_to(target)
    hard = target.with_name("hard" + target.suffix)
    os.link(target, hard)
    return [target, target.parent / "sub" / ".." / target.name, link, hard]


def test_same_file_sees_through_spellings_links_and_files_not_written_yet(tmp_path):
    same_file = banet.outputs.same_file
    target = tmp_path / "a.onnx"
    target.write_bytes(b"x")
    for other in spellings(target):
        assert same_file(other, target) and same_file(target, other)
    assert not same_file(tmp_path / "b.onnx", target)
    # neither exists yet (an output and a report the same command will write): where they lead decides
    assert same_file(tmp_path / "new.json", tmp_path / "sub" / ".." / "new.json")
    (tmp_path / "dir-link").symlink_to(tmp_path / "sub")
    assert same_file(tmp_path / "dir-link" / "new.json", tmp_path / "sub" / "new.json")
    assert not same_file(tmp_path / "new.json", tmp_path / "other.json")


def test_check_output_refuses_an_input_even_with_force_naming_both_paths(tmp_path):
    check_output, check_not_input = banet.outputs.check_output, banet.outputs.check_not_input
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x")
    link = tmp_path / "report.json"
    link.symlink_to(source)
    for force in (False, True):
        with pytest.raises(Refused) as info:
            check_output(link, force=force, error=Refused, suffix=".json", option="--json",
                         inputs={"the FP32 ONNX (--onnx)": source, "the checkpoint (--weights)": None})
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"--json {link} is the FP32 ONNX (--onnx), {source};")
        assert "even with --force" in message
    check_output(tmp_path / "other.json", force=False, error=Refused, suffix=".json", inputs={"x": source})
    with pytest.raises(Refused, match="is an INT8 model"):  # (what, path) pairs: several files of one kind
        check_not_input(source, [("an INT8 model", tmp_path / "x.onnx"), ("an INT8 model", source)], error=Refused)


def test_sensitivity_json_never_replaces_its_onnx_or_weights(tmp_path, files, capsys):
    onnx, weights = files
    for target in (onnx, weights):
        for path in spellings(target):
            code = sensitivity.main(["--onnx", str(onnx), "--weights", str(weights), "--json", str(path), "--force"])
            refused(capsys, code, f"--json {path} is the", str(target), "even with --force")
            untouched(onnx, weights)


def test_sensitivity_json_never_replaces_the_default_onnx(tmp_path, files, capsys, monkeypatch):
    """Without --onnx it reads (and makes) engines/<weights stem>.onnx: that file is an input too."""
    onnx, weights = files
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    refused(capsys, sensitivity.main(["--weights", str(weights), "--json", str(tmp_path / "model.onnx"), "--force"]),
            "is the FP32 ONNX (the default)")
    untouched(onnx, weights)


def test_fp16_json_never_replaces_its_weights(tmp_path, files, capsys):
    onnx, weights = files
    for path in spellings(weights):
        refused(capsys, fp16.main(["--weights", str(weights), "--json", str(path), "--force"]),
                f"--json {path} is the checkpoint (--weights), {weights}")
        untouched(onnx, weights)


def test_quantize_output_never_replaces_its_onnx_or_weights_before_any_work(tmp_path, files, capsys):
    """Before: the --onnx comparison came after ensure_fp32_onnx (which may export), resolved paths only (a hard
    link passed), and --weights was not compared at all."""
    onnx, weights = files
    named = tmp_path / "weights.onnx"  # a checkpoint under an ONNX name: the .onnx check lets it through
    named.write_bytes(WEIGHTS_BYTES)
    for path in spellings(onnx):
        refused(capsys, quantize.main(["--onnx", str(onnx), "--flavour", "ort", "--output", str(path), "--force"]),
                f"--output {path} is the FP32 ONNX being quantized (--onnx), {onnx}")
    refused(capsys, quantize.main(["--onnx", str(onnx), "--weights", str(named), "--flavour", "ort", "--output",
                                   str(tmp_path / "sub" / ".." / "weights.onnx"), "--force"]),
            "is the checkpoint (--weights)")
    untouched(onnx, weights)
    assert named.read_bytes() == WEIGHTS_BYTES


def test_quantize_list_groups_does_not_check_the_output(tmp_path, tiny_onnx, capsys):
    """Before: 'error: ... exists; pass --force to overwrite it', although --list-groups writes nothing."""
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's INT8 model")
    code = quantize.main(["--onnx", str(tiny_onnx), "--flavour", "ort", "--output", str(mine), "--list-groups",
                          "--calib-count", "1", "--calib-size", "32x32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("ort:\n") and "BAM_1/BA" in out
    assert mine.read_bytes() == b"the user's INT8 model" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx"]


def test_drift_output_folder_never_replaces_an_input(tmp_path, files, capsys):
    """--output DIR writes DIR/drift_report.json and .md: refused when one of them is a file it reads."""
    onnx, weights = files
    folder = tmp_path / "reports"
    folder.mkdir()
    int8 = folder / "drift_report.md"  # an INT8 model under an unlucky name
    int8.write_bytes(b"the user's INT8 model")
    (tmp_path / "reports-link").symlink_to(folder)
    for output in (folder, tmp_path / "reports-link", tmp_path / "sub" / ".." / "reports"):
        code = drift.main(["--weights", str(weights), "--onnx", str(onnx), "--int8", str(int8), "--output",
                           str(output), "--force"])
        refused(capsys, code, f"--output {output / 'drift_report.md'} is an INT8 model (--int8), {int8}")
    assert int8.read_bytes() == b"the user's INT8 model" and sorted(p.name for p in folder.iterdir()) == [int8.name]
    untouched(onnx, weights)


def test_to_onnx_uses_the_shared_check_hard_links_included(tmp_path, files, capsys, monkeypatch):
    """export/to_onnx.py had its own resolved-path comparison: a hard link to the checkpoint passed it."""
    from export import to_onnx

    onnx, weights = files
    monkeypatch.setattr(to_onnx, "load_checkpoint", lambda path: pytest.fail("the export started"))
    hard = tmp_path / "hard.json"
    os.link(weights, hard)
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(tmp_path / "x.onnx"), "--report",
                                  str(hard), "--force"]),
            f"--report {hard} is the checkpoint (--weights), {weights}")
    untouched(onnx, weights)


def test_build_trt_output_never_replaces_its_weights(tmp_path, tiny_onnx, tiny_checkpoint, capsys):
    """The engine (and its manifest) are checked against the ONNX and the checkpoint too (a dry run: no TensorRT)."""
    import shutil

    from export import build_trt

    weights = tmp_path / "tiny.engine"  # a checkpoint under an engine's name: the suffix check lets it through
    shutil.copy(tiny_checkpoint, weights)
    before = weights.read_bytes()
    for output in (weights, tmp_path / "sub" / ".." / "tiny.engine"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        code = build_trt.main(["--runtime", "tensorrt-rtx", "--onnx", str(tiny_onnx), "--weights", str(weights),
                               "--output", str(output), "--force", "--dry-run", "-q", "--min", "64x64", "--opt",
                               "64x64", "--max", "1x128x128"])
        refused(capsys, code, f"--output {output} is the checkpoint (--weights), {weights}")
    assert weights.read_bytes() == before
