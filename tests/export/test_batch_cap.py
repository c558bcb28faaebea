"""An upper bound on the batch of every export shape (banet.shapes.MAX_BATCH), in one line naming the option.

Before: ``export/build_trt.py --max 100000x128x128`` and ``export/to_onnx.py --batch 100000`` were accepted and
failed later, deep inside TensorRT or ONNX Runtime, or ate the machine's memory."""

from pathlib import Path

import pytest

from banet.shapes import MAX_BATCH, ShapeError, batch_problem, parse_batch, parse_nhw
from export import build_trt, to_onnx
from export.onnx_export import ExportError, ExportOptions, validate_options
from export.trt.onnx_info import expected_onnx_info
from export.trt_build import DEFAULT_MAX, DEFAULT_MIN, DEFAULT_OPT, PlanError, validate_profile

DYNAMIC = expected_onnx_info(Path("banet_default.onnx"), "fp32")


def argparse_error(capsys, parser, argv: list[str]) -> str:
    """The one error line argparse prints (after its usage) for a refused option; exit status 2."""
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


def test_the_cap_is_256_and_its_reason_is_the_memory():
    assert MAX_BATCH == 256
    assert batch_problem(MAX_BATCH, 1080, 1920) is None
    problem = batch_problem(100_000, 128, 128)
    assert "batch 100000 is over the limit of 256" in problem and "2.2 TB" in problem and "128x128" in problem


@pytest.mark.parametrize("option", ["--min", "--opt", "--max", "--calibration-shape"])
def test_build_trt_refuses_a_huge_batch_naming_option_value_and_limit(capsys, option):
    line = argparse_error(capsys, build_trt.build_parser(), [option, "100000x128x128"])
    assert line.startswith(f"export/build_trt.py: error: argument {option}: 100000x128x128: batch 100000 is over "
                           "the limit of 256")
    assert "TB of activations" in line


def test_build_trt_main_exits_2_before_any_work(capsys):
    with pytest.raises(SystemExit) as info:
        build_trt.main(["--max", "100000x128x128", "--dry-run"])
    assert info.value.code == 2 and "over the limit of 256" in capsys.readouterr().err


def test_to_onnx_refuses_a_huge_batch(capsys):
    for option, value in (("--batch", "100000"), ("--verify-sizes", "1000x64x64")):
        line = argparse_error(capsys, to_onnx.build_parser(), [option, value])
        assert f"argument {option}:" in line and "over the limit of 256" in line, line
    line = argparse_error(capsys, to_onnx.build_parser(), ["--batch", "0"])
    assert "argument --batch:" in line and ">= 1" in line


def test_batches_up_to_the_cap_and_the_defaults_still_parse():
    assert parse_nhw("256x64x64") == (256, 64, 64) and parse_nhw("256x3x64x64") == (256, 64, 64)
    assert parse_batch("256") == 256 and parse_batch(" 1 ") == 1
    assert to_onnx.build_parser().parse_args(["--batch", "4"]).batch == 4
    args = build_trt.build_parser().parse_args([])
    assert (args.min, args.opt, args.max) == (DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX)
    assert validate_profile(DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX, DYNAMIC).max == (4, 3, 1080, 1920)
    assert validate_profile((1, 64, 64), (256, 64, 64), (256, 64, 64), DYNAMIC).max[0] == 256


@pytest.mark.parametrize("text", ["257x64x64", "100000x128x128", "1000x3x8x8"])
def test_the_one_parser_refuses_it(text):
    with pytest.raises(ShapeError, match=f"^{text}: batch \\d+ is over the limit of 256"):
        parse_nhw(text)


def test_the_library_paths_refuse_it_too():
    """Options built in Python (not parsed) get the same bound, naming the option the command line would."""
    with pytest.raises(PlanError, match=r"^--max 300x256x256: batch 300 is over the limit of 256: .*26.4 GB"):
        validate_profile((1, 256, 256), (1, 256, 256), (300, 256, 256), DYNAMIC)
    with pytest.raises(ExportError, match=r"^--batch 100000: batch 100000 is over the limit of 256: .*at 64x64"):
        validate_options(ExportOptions(static_hw=(64, 64), batch=100_000))
    with pytest.raises(ExportError, match=r"^verification shape 1000x8x8: batch 1000 is over the limit"):
        validate_options(ExportOptions(verify_shapes=[(1, 8, 8), (1000, 8, 8)]))
    validate_options(ExportOptions(static_hw=(64, 64), batch=MAX_BATCH))
    validate_options(ExportOptions())


def test_serving_and_triton_repositories_take_the_same_cap(capsys, tmp_path):
    """``serving.serve --max-batch`` and ``export/to_triton.py --max-batch`` (a repository's max_batch_size, which
    the launcher reads back) end at MAX_BATCH too: they used to take up to 1024, batches no export accepts."""
    from banet.triton_marker import DEFAULT_MAX_PIXELS
    from export import to_triton
    from export.triton_repo import TritonRepoError, check_options
    from serving import serve

    assert serve._parser().parse_args(["--max-batch", str(MAX_BATCH)]).max_batch == MAX_BATCH
    with pytest.raises(SystemExit) as info:
        serve._parser().parse_args(["--max-batch", str(MAX_BATCH + 1)])
    assert info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "--max-batch" in line and "at most 256, got 257" in line and "\n" not in line, line
    check_options(MAX_BATCH, 1, 0, DEFAULT_MAX_PIXELS)
    with pytest.raises(TritonRepoError, match=r"^max-batch must be an integer from 1 to 256, got 257$"):
        check_options(MAX_BATCH + 1, 1, 0, DEFAULT_MAX_PIXELS)
    onnx = tmp_path / "any.onnx"
    onnx.write_bytes(b"numbers are checked before the file is read")
    repository = tmp_path / "repo"
    assert to_triton.main(["--onnx", str(onnx), "--repository", str(repository), "--max-batch", "1024"]) == 1
    assert capsys.readouterr().err.strip() == "error: max-batch must be an integer from 1 to 256, got 1024"
    assert not repository.exists()
