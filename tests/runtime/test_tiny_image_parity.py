"""Images with a side under 8 pixels give the checkpoint's pixels on every CPU backend (round 17)."""

import importlib.util

import numpy as np
import pytest

from runtime import Deblurrer

BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-30)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tiny_image_gets_the_checkpoints_pixels_on_the_onnx_backends(backend):
    """The shipped ONNX recorded a smallest size of 8, so the runtime padded a 6x40 strip to 8x40 before the
    network (whose strip pooling then averaged the padding in): 34.5 dB from the checkpoint on PyTorch, where every
    larger size is about 150 dB. The graph runs (and is now verified) down to 2x2."""
    rng = np.random.default_rng(0)
    with Deblurrer(backend="torch") as reference, Deblurrer(backend=backend) as other:
        for shape in [(6, 40), (2, 2), (3, 7), (40, 6)]:
            image = rng.random((*shape, 3)).astype(np.float32)
            assert _psnr(other(image), reference(image)) > 100, (backend, shape)
