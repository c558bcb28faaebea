"""--onnx given a file that onnx.load would parse as text by its extension (audit, MEDIUM): an engine's manifest
(.json), a .onnxtxt or a .textproto. Before, export/build_trt.py (and export/to_triton.py, through the same
export.onnx_file.load_onnx) ended in a traceback from protobuf's JSON parser or ONNX's text parser; now the file
is read as a binary ONNX whatever its name, and one that is not is refused in one line naming it.
"""

import shutil
from pathlib import Path

import pytest

from banet.errors import ArtifactError
from export import build_trt
from export.onnx_file import load_onnx
from tests.cli_helpers import refused

PROFILE = ["--min", "64x64", "--opt", "64x64", "--max", "1x128x128"]
TEXTS = {
    "engine.json": '{"engine": "tiny.engine", "engine_sha256": "00", "schema": 1}\n',  # an engine's manifest
    "model.onnxtxt": '<ir_version: 8, opset_import: ["" : 17]>\nagraph (float[N] x) => (float[N] y) {\n'
                     "  y = Relu(x)\n}\n",
    "model.textproto": "ir_version: 8\ngraph { name: 'g' }\n",
    "broken.json": "{not json at all",
}


@pytest.fixture(scope="module")
def tiny_onnx(one_bam_onnx) -> Path:
    return one_bam_onnx


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_a_text_file_given_as_onnx_is_one_line(tmp_path, name, capsys):
    path = tmp_path / name
    path.write_text(TEXTS[name])
    with pytest.raises(ArtifactError, match=rf"{name}: not a readable ONNX model .*ONNX files end in \.onnx"):
        load_onnx(path)
    code = build_trt.main(["--runtime", "tensorrt-rtx", "--onnx", str(path), "--output",
                           str(tmp_path / "x.engine"), "-q", *PROFILE])
    refused(capsys, code, f"{path}: not a readable ONNX model")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_real_onnx_under_another_extension_still_loads(tmp_path, tiny_onnx):
    renamed = tmp_path / "tiny.json"
    shutil.copyfile(tiny_onnx, renamed)
    assert len(load_onnx(renamed).graph.node) == len(load_onnx(tiny_onnx).graph.node) > 0
