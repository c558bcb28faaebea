"""export/build_trt.py and the file at the engine's manifest name (audit, HIGH): ``x.engine``'s manifest is ``x.json``,
which ``x.plan`` and ``x.trt`` share and a user may hold a JSON of their own under. That file is refused without
--force like the engine itself, and a manifest of another engine file is never replaced, even with --force. Before,
the manifest path was only checked against the build's inputs, and a build wrote over either file silently.

The TensorRT builder is a stand-in here (bytes, no engine): what is tested is the file handling around it.
"""

import itertools
import json
from pathlib import Path

import pytest
import torch

from banet.config import BANetConfig
from banet.manifest import manifest_path, read_manifest
from banet.model import BANet
from export import build_trt
from export.onnx_export import ExportOptions, export_onnx
from export.trt import engine_files
from tests.cli_helpers import refused

TINY = BANetConfig(num_bams=1, dim_1=8, dim_2=16)
PROFILE = ["--min", "64x64", "--opt", "64x64", "--max", "1x128x128"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(BANet(TINY).eval(), path, ExportOptions(verify_shapes=[(1, 64, 64)]), "ab" * 32, "t.safetensors",
                TINY)
    return path


@pytest.fixture
def fake_builder(monkeypatch):
    """TensorRT's builder replaced by a stand-in that returns new bytes on every call (NOT an engine), no GPU."""
    counter = itertools.count()

    def build_serialized(plan, trt, calibration_batches=None, progress_stream=None):
        return f"stand-in engine {next(counter)};".encode() * 500, {"seconds": 0.01, "layers": 3}

    monkeypatch.setattr(engine_files, "build_serialized", build_serialized)
    monkeypatch.setattr(engine_files, "ensure_runnable", lambda plan: None)


def build(onnx: Path, engine: Path, *extra: str) -> int:
    return build_trt.main(["--runtime", "tensorrt-rtx", "--onnx", str(onnx), "--output", str(engine), "-q",
                           *PROFILE, *extra])


def test_a_users_json_at_the_manifest_name_needs_force(tmp_path, tiny_onnx, fake_builder, capsys):
    mine = tmp_path / "tiny.json"
    mine.write_text('{"my": "settings"}\n')
    engine = tmp_path / "tiny.engine"
    refused(capsys, build(tiny_onnx, engine), f"{mine} exists", "--force")
    assert mine.read_text() == '{"my": "settings"}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]
    assert build(tiny_onnx, engine, "--force") == 0, capsys.readouterr().err  # asked for: replaced
    assert read_manifest(engine).engine == "tiny.engine"


def test_another_engines_manifest_is_never_replaced(tmp_path, tiny_onnx, fake_builder, capsys):
    engine = tmp_path / "tiny.engine"
    assert build(tiny_onnx, engine) == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    plan = tmp_path / "tiny.plan"  # its manifest is tiny.json too
    refused(capsys, build(tiny_onnx, plan), f"{manifest_path(plan)}", "--force")
    refused(capsys, build(tiny_onnx, plan, "--force"), "manifest of another engine, tiny.engine",
            "refused even with --force")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert read_manifest(engine).engine == "tiny.engine"  # still describes its engine
    # its own engine is rebuilt with --force as before, manifest and all
    assert build(tiny_onnx, engine, "--force") == 0, capsys.readouterr().err
    assert engine.read_bytes() != before["tiny.engine"] and read_manifest(engine).engine == "tiny.engine"
    assert json.loads((tmp_path / "tiny.json").read_text())["engine"] == "tiny.engine"
