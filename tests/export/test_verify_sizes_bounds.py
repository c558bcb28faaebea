"""--verify-sizes of export/to_app.py and export/to_onnx.py (audit, MEDIUM): one validation (banet.shapes.
sweep_problem) refuses, before any work, a shape with nothing in it and one no check can hold in memory, in one
``error:`` line (exit 1). Before, to_app took any shape: ``0x0`` ended in a ZeroDivisionError after a minute of work,
``1x99999x99999`` made OpenCV allocate 30 GB.
"""

import pytest

from banet.shapes import sweep_problem
from export import onnx_export, to_app, to_onnx
from export.onnx_export import ExportError, ExportOptions, validate_options
from tests.cli_helpers import refused

#: --verify-sizes given -> (the shape as refused, why)
REFUSED = {"0x0": ("1x0x0", "batch, height and width must be >= 1"),
           "1x0x64": ("1x0x64", "batch, height and width must be >= 1"),
           "0x8x8": ("0x8x8", "batch, height and width must be >= 1"),
           "1x99999x99999": ("1x99999x99999", "99999x99999 is 10,000 MP, over the 200 MP")}


@pytest.mark.parametrize("command", [to_app, to_onnx], ids=["to_app", "to_onnx"])
@pytest.mark.parametrize("given", sorted(REFUSED))
def test_a_shape_no_check_can_take_is_refused_before_any_work(command, given, tiny_weights, tmp_path, capsys,
                                                              monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work with this shape")

    monkeypatch.setattr(to_app, "make", no_work)
    monkeypatch.setattr(onnx_export, "_export_checked", no_work)
    shape, why = REFUSED[given]
    code = command.main(["--weights", str(tiny_weights), "--output", str(tmp_path / "x.onnx"), "--verify-sizes",
                         "1x32x32", given])
    refused(capsys, code, f"verification shape {shape}: {why}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_the_library_refuses_the_same_shapes():
    for shape, why in REFUSED.values():
        n, h, w = map(int, shape.split("x"))
        assert sweep_problem([(1, 32, 32), (n, h, w)]).startswith(f"verification shape {shape}: {why}")
    assert sweep_problem([(2, 36, 52), (1, 10000, 20000)]) is None
    with pytest.raises(ExportError, match="verification shape 1x99999x99999: .*over the 200 MP"):
        validate_options(ExportOptions(verify_shapes=[(1, 32, 32), (1, 99999, 99999)]))
    validate_options(ExportOptions(verify_shapes=[(300, 32, 32)], batch=1))  # a fixed --batch replaces N
