"""The default model's ONNX ships with the package (``banet/weights/banet_default.onnx``) so the thin install runs
``Deblurrer()`` without PyTorch. It must stand for the shipped weights: its metadata records their sha256 (checked
here without torch), and where torch is installed it gives the checkpoint's output on a small input.
``scripts/refresh_default.sh`` regenerates it whenever the weights change."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from banet.defaults import DEFAULT_ONNX, DEFAULT_WEIGHTS, default_model_path
from banet.hashing import file_sha256
from banet.metadata import read_onnx_metadata, stale_source

ROOT = Path(__file__).resolve().parents[2]
REFRESH = "bash scripts/refresh_default.sh (or: python export/to_onnx.py --output banet/weights/banet_default.onnx)"


def test_shipped_onnx_is_the_export_of_the_shipped_weights():
    metadata = read_onnx_metadata(DEFAULT_ONNX)  # also checks the graph is the BANet its metadata describes
    assert metadata.source_sha256 == file_sha256(DEFAULT_WEIGHTS), f"stale default ONNX: regenerate it with {REFRESH}"
    assert stale_source(metadata, DEFAULT_ONNX, DEFAULT_WEIGHTS) is None
    assert metadata.source_name == DEFAULT_WEIGHTS.name and metadata.precision == "fp32"


def test_shipped_onnx_is_package_data_and_small():
    assert '"weights/*.onnx"' in (ROOT / "pyproject.toml").read_text()  # banet's package-data ships it
    assert DEFAULT_ONNX.stat().st_size < 12e6  # the embedded FP32 export, weights inside the file


def test_default_model_path_runs_the_onnx_where_torch_is_not_wanted():
    assert default_model_path("onnxruntime") == DEFAULT_ONNX
    assert default_model_path(None) == (DEFAULT_WEIGHTS if importlib.util.find_spec("torch") else DEFAULT_ONNX)
    with pytest.raises(ValueError, match="tensorrt backend runs engines"):
        default_model_path("tensorrt")


def test_shipped_onnx_matches_the_checkpoint():
    """ONNX Runtime on the shipped file vs PyTorch on the shipped weights, one small odd-sized input."""
    torch = pytest.importorskip("torch", reason="the parity check runs the checkpoint: pip install '.[export]'")
    ort = pytest.importorskip("onnxruntime")
    from banet.checkpoint import load_checkpoint

    model = load_checkpoint(DEFAULT_WEIGHTS).model.eval()
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 40, 56)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"])
    [got] = session.run(None, {session.get_inputs()[0].name: x})
    assert np.abs(got - expected).max() <= 1e-4, f"regenerate the shipped ONNX: {REFRESH}"
