from pathlib import Path

import pytest

from banet.defaults import default_model_path
from runtime import Deblurrer


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def pair(tiny_weights):
    """The same tiny network on PyTorch and on ONNX Runtime (exported and verified into the cache)."""
    with Deblurrer(tiny_weights, backend="torch") as torch_d, \
            Deblurrer(tiny_weights, backend="onnxruntime", threads=1) as ort_d:
        yield torch_d, ort_d


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    """The default model's shipped FP32 ONNX (fast on ONNX Runtime at small sizes)."""
    return default_model_path("onnxruntime")
