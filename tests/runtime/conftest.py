import pytest

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
