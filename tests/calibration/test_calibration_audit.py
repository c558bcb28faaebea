"""The calibration commands after the export audit (MEDIUM/LOW):

* ``calibration.drift --threads 100000`` is refused on the command line (banet.cli_types.threads), as every other
  thread count is; before, it hung creating ONNX Runtime sessions.
* A name longer than the file system allows, given or derived by quantize from a long ``--calib-dir``, is one
  ``error:`` line (or, derived, shortened so it fits); before, ``OSError: [Errno 36] File name too long`` traceback.
* The fix a refusal suggests is safe to paste: it never names the user's own file as the output (to_onnx over the
  user's FP16 file, quantize over the user's FP32 file) and holds no shell pipe (``--flavour ort|trt``).
"""

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import calibration.cli_common
from banet.metadata import read_onnx_metadata
from banet.outputs import NAME_MAX
from calibration import drift, quantize, sensitivity
from tests.cli_helpers import refused

LONG = "x" * 300


@pytest.fixture(autouse=True)
def _own_engines(monkeypatch, tmp_path):
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path / "engines"))


@pytest.fixture
def fp16_copy(tmp_path, tiny_onnx) -> Path:
    """The tiny FP32 graph recorded as an FP16 export: the user's ``E/my_fp16.onnx``."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    for entry in model.metadata_props:
        if entry.key == "banet.precision":
            entry.value = "fp16"
    path = tmp_path / "E" / "my_fp16.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    return path


# -- --threads -----------------------------------------------------------------------------------------------------
def test_drift_refuses_more_threads_than_cpus_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(calibration.cli_common, "read_files",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("drift started its work")))
    with pytest.raises(SystemExit) as exit_:
        drift.main(["--threads", "100000"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --threads" in err and "CPU(s) this process may use" in err, err


# -- names longer than the file system allows ------------------------------------------------------------------------
def test_an_over_long_output_name_is_one_line(tmp_path, tiny_onnx, capsys):
    code = quantize.main(["--onnx", str(tiny_onnx), "--flavour", "ort", "--output", str(tmp_path / f"{LONG}.onnx")])
    refused(capsys, code, "File name too long", "give a shorter one")
    refused(capsys, sensitivity.main(["--onnx", str(tiny_onnx), "--json", str(tmp_path / f"{LONG}.json")]),
            "File name too long")
    refused(capsys, drift.main(["--onnx", str(tiny_onnx), "--int8", "--no-fp16", "--output", str(tmp_path / LONG)]),
            "File name too long")


def test_quantize_derives_a_name_that_fits_from_a_long_calib_dir(tmp_path, tiny_onnx, capsys, monkeypatch):
    import cv2

    folder = tmp_path / ("photos-" + "y" * 240)
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    written = []

    def fake_quantize_int8(fp32_onnx, output, source, flavour, *args, **kwargs):
        written.append(Path(output))
        Path(output).write_text("int8")
        return SimpleNamespace(verification={}, path=output, quantized_nodes=[], excluded_groups=[], seconds=0.0,
                               tensorrt_parse={})

    monkeypatch.setattr(quantize, "quantize_int8", fake_quantize_int8)
    code = quantize.main(["--onnx", str(tiny_onnx), "--flavour", "ort", "--calib-dir", str(folder),
                          "--calib-count", "1", "--calib-size", "32"])
    assert code == 0, capsys.readouterr().err
    [output] = written
    assert output.parent == tiny_onnx.parent and len(output.name.encode()) <= NAME_MAX
    assert output.name.startswith("tiny_int8_ort_calib-") and output.is_file()
    output.unlink()


# -- hints safe to paste ---------------------------------------------------------------------------------------------
def _command(line: str, program: str) -> list[str]:
    """The ``program`` command a refusal suggests, as a shell would split it."""
    match = re.search(rf"({re.escape(program)} .*?) and pass", line)
    assert match, line
    return shlex.split(match.group(1))


@pytest.mark.parametrize("command", [quantize, sensitivity], ids=lambda m: m.__name__)
def test_an_fp16_onnx_is_refused_with_an_export_to_a_new_name(command, fp16_copy, capsys):
    before = fp16_copy.read_bytes()
    line = refused(capsys, command.main(["--onnx", str(fp16_copy)]), "is a fp16 model")
    argv = _command(line, "python export/to_onnx.py")
    target = Path(argv[argv.index("--output") + 1])
    assert target == fp16_copy.with_name("my.onnx") and not target.exists() and "--force" not in argv
    assert "pass it as --onnx" in line
    # round 17: the tiny network's file; the line exported the embedded default model under its name
    assert argv[argv.index("--weights") + 1] == "tiny.safetensors" and "where tiny.safetensors" in line
    # with that name taken, another one that is free; the user's file is never the target
    target.write_bytes(b"the user's FP32 file")
    line = refused(capsys, command.main(["--onnx", str(fp16_copy)]), "is a fp16 model")
    argv = _command(line, "python export/to_onnx.py")
    assert Path(argv[argv.index("--output") + 1]) == fp16_copy.with_name("my_fp32.onnx")
    assert fp16_copy.read_bytes() == before and target.read_bytes() == b"the user's FP32 file"


def test_an_fp32_file_given_as_int8_gets_a_quantize_line_that_works(tmp_path, tiny_onnx, capsys):
    mine = tmp_path / "E" / "my.onnx"
    mine.parent.mkdir()
    mine.write_bytes(tiny_onnx.read_bytes())
    line = refused(capsys, drift.main(["--int8", str(mine), "--output", str(tmp_path / "report")]),
                   "is an FP32 model, not an INT8 Q/DQ one")
    argv = _command(line, "python -m calibration.quantize")
    assert "|" not in " ".join(argv) and "--output" not in argv and argv[argv.index("--onnx") + 1] == str(mine)
    assert quantize.main([*argv[3:], "--calib-count", "2", "--calib-size", "32"]) == 0, capsys.readouterr().err
    made = mine.with_name("my_int8_ort.onnx")
    assert str(made) in line and read_onnx_metadata(made).precision == "int8"
    assert mine.read_bytes() == tiny_onnx.read_bytes()  # the user's FP32 file, unchanged


def test_a_missing_int8_file_gets_a_line_without_a_pipe(tmp_path, tiny_onnx, capsys):
    missing = tmp_path / "E" / "my_int8_trt.onnx"
    line = refused(capsys, drift.main(["--onnx", str(tiny_onnx), "--int8", str(missing), "--output",
                                       str(tmp_path / "report")]), "ONNX file not found; make it with")
    argv = shlex.split(line.split("make it with ", 1)[1])
    assert argv[:5] == ["python", "-m", "calibration.quantize", "--flavour", "trt"]
    assert argv[argv.index("--onnx") + 1] == str(tiny_onnx) and argv[argv.index("--output") + 1] == str(missing)


@pytest.mark.parametrize("argv, message", [
    (["--percentile", "50"], "--percentile is for --method percentile; with --method minmax it would be ignored"),
    (["--method", "percentile", "--percentile", "500"], "500 is not a percentile"),
    (["--max-excluded", "-1"], "--max-excluded: must be at least 0"),
    (["--probe-count", "0"], "--probe-count: must be at least 1"),
])
def test_sensitivity_refuses_ignored_or_impossible_options_before_any_work(argv, message, capsys):
    """--percentile without --method percentile was ignored after a 40 s run, 500 failed inside ONNX Runtime,
    --max-excluded -1 ran and ended with an undocumented exit 3."""
    from calibration.sensitivity import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("module", ["calibration.quantize", "calibration.sensitivity", "calibration.drift"])
def test_calibration_help_reads_as_text_not_sphinx_markup(module):
    import importlib
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    assert ":mod:`" not in out.getvalue() and ":func:`" not in out.getvalue() and "``" not in out.getvalue()
