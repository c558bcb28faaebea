"""NVIDIA Polygraphy's own command line compares our exports on real photos (issue 16): the shipped data loader
feeds ``polygraphy run``; FP16 against golden FP32 outputs passes at the README's tolerance, a corrupted model
fails the same comparison (exit 1), so the check can gate a pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADER = f"{ROOT / 'export' / 'polygraphy_data.py'}:load_data"
#: The README's tolerance for FP16 against FP32 outputs (the network's output is a residual in [-1, 1]).
FP16_CHECK = ["--check-error-stat", "max", "--atol", "0.02", "--rtol", "0"]


def polygraphy(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or shutil.which("polygraphy")
    env = {**os.environ, "BANET_PG_SHAPES": "1x64x64,2x48x80", "PYTHONPATH": str(ROOT)}
    return subprocess.run([exe, "run", *args, "--data-loader-script", LOADER], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def exports(tmp_path, tiny_model):
    pytest.importorskip("polygraphy", reason="Polygraphy comes with the rtx and tensorrt extras")
    from export.onnx_export import ExportOptions, export_onnx

    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = tmp_path / f"tiny_{precision}.onnx"
        export_onnx(tiny_model, paths[precision], ExportOptions(precision=precision, verify_shapes=[(1, 64, 64)]),
                    "0" * 64, "tiny.safetensors", tiny_model.config)
    return paths


def corrupted(source: Path, target: Path) -> Path:
    """The same graph with one convolution's weights scaled by 1.5: a plausible silent export bug."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    tensor = next(t for t in model.graph.initializer if t.name in conv_weights)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.5), tensor.name))
    onnx.save(model, str(target))
    return target


def test_polygraphy_compares_fp16_with_golden_fp32_and_refuses_a_corrupted_model(exports, tmp_path):
    golden = tmp_path / "golden.json"
    saved = polygraphy(str(exports["fp32"]), "--onnxrt", "--save-outputs", str(golden), cwd=tmp_path)
    assert saved.returncode == 0 and golden.is_file(), saved.stdout[-2000:] + saved.stderr[-2000:]

    fp16 = polygraphy(str(exports["fp16"]), "--onnxrt", "--load-outputs", str(golden), *FP16_CHECK, cwd=tmp_path)
    assert fp16.returncode == 0, fp16.stdout[-3000:] + fp16.stderr[-2000:]
    assert "PASSED | simple | All outputs matched" in fp16.stdout + fp16.stderr

    bad = corrupted(exports["fp32"], tmp_path / "corrupted.onnx")
    failed = polygraphy(str(bad), "--onnxrt", "--load-outputs", str(golden), *FP16_CHECK, cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "FAILED" in failed.stdout + failed.stderr
