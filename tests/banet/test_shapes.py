"""One size/shape parser, height before width, in every command (issue 15)."""

from __future__ import annotations

import pytest

from banet.shapes import ShapeError, hw_text, parse_hw, parse_nhw


def test_height_comes_first():
    assert parse_hw("720x1280") == (720, 1280) and hw_text(720, 1280) == "720x1280"
    assert parse_hw("256", square_from_one=True) == (256, 256)
    assert parse_nhw("2x720x1280") == (2, 720, 1280) and parse_nhw("96x64") == (1, 96, 64)
    assert parse_nhw("4x3x1080x1920") == (4, 1080, 1920)


@pytest.mark.parametrize("text", ["1280", "720x", "x720", "720*1280", "a x b", ""])
def test_bad_sizes_name_the_form(text):
    with pytest.raises(ShapeError, match="HxW"):
        parse_hw(text)


def test_bad_shapes_name_the_form():
    with pytest.raises(ShapeError, match="NxHxW"):
        parse_nhw("1x2x3x4x5")
    with pytest.raises(ShapeError, match="3 channels"):
        parse_nhw("1x4x64x64")


def test_every_command_reads_720x1280_as_height_720():
    pytest.importorskip("torch", reason="the commands' modules need pip install '.[export]'")
    from benchmarks import memory, run
    from calibration import quantize
    from export import build_trt, to_onnx

    assert to_onnx.build_parser().parse_args(["--static", "720x1280"]).static == (720, 1280)
    assert build_trt.build_parser().parse_args(["--calibration-shape", "720x1280"]).calibration_shape == (1, 720, 1280)
    assert quantize.build_parser().parse_args(["--calib-size", "720x1280"]).calib_size == (720, 1280)
    for module in (run, memory):
        parser = module.build_parser()
        assert parser.parse_args(["--sizes", "720x1280"]).sizes == [(720, 1280)]
