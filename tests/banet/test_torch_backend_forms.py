"""The PyTorch backend runs a checkpoint in its deployed form by default (the attention folded; channels_last on a
CPU), computing the trained network's function; ``fold_attention=False`` and ``channels_last=False`` give the module
tree as trained, and bad values are one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch backend needs torch: pip install '.[export]'")

from banet.errors import OptionError  # noqa: E402
from banet.folding import FoldedAttention, is_folded  # noqa: E402
from banet.model import BlurAwareAttention  # noqa: E402
from banet.torch_backend import TorchBackend  # noqa: E402
from runtime import Deblurrer  # noqa: E402


def _batch(n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(3).random((n, 3, h, w), dtype=np.float32) - 0.5


def _trained_output(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("shape", [(1, 40, 56), (2, 38, 50), (1, 64, 24)])
def test_default_cpu_backend_is_folded_channels_last_and_computes_the_trained_function(tiny_weights, tiny_model,
                                                                                        shape):
    backend = TorchBackend(tiny_weights, device="cpu")
    assert is_folded(backend.model) and backend.channels_last
    assert backend.metadata.attention == "folded" and "folded attention" in backend.describe()
    assert not any(isinstance(m, BlurAwareAttention) for m in backend.model.modules())
    x = _batch(*shape)
    expected = _trained_output(tiny_model, x)
    got = backend.run(x)
    assert np.abs(expected).max() > 0.05  # a visible residual: a wrong form would show
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
    assert got.flags.c_contiguous and got.dtype == np.float32


def test_trained_form_and_contiguous_layout_on_request(tiny_weights, tiny_model):
    backend = TorchBackend(tiny_weights, device="cpu", fold_attention=False, channels_last=False)
    assert not is_folded(backend.model) and not backend.channels_last
    assert backend.metadata.attention == "trained" and "trained attention" in backend.describe()
    x = _batch(1, 40, 56)
    np.testing.assert_array_equal(backend.run(x), _trained_output(tiny_model, x))


def test_folding_leaves_nothing_of_the_trained_attention_behind(tiny_weights):
    """Each BAM holds one FoldedAttention and no ``fuse_conv``: the folded copy replaced the trained modules (the
    backend does not keep both in memory)."""
    backend = TorchBackend(tiny_weights, device="cpu")
    bams = [getattr(backend.model, f"BAM_{k}") for k in range(1, backend.model.config.num_bams + 1)]
    assert all(isinstance(bam.BA, FoldedAttention) for bam in bams)
    assert not [name for name, _ in backend.model.named_modules() if name.endswith("fuse_conv")]


def test_deblurrer_passes_the_forms_and_checks_them(tiny_weights, tiny_model):
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    with Deblurrer(tiny_weights, backend="torch", device="cpu") as default, \
            Deblurrer(tiny_weights, backend="torch", device="cpu", fold_attention=False,
                      channels_last=False) as trained:
        assert default.backend.metadata.attention == "folded" and default.backend.channels_last
        assert trained.backend.metadata.attention == "trained" and not trained.backend.channels_last
        difference = np.abs(default.deblur(image).astype(int) - trained.deblur(image).astype(int))
        assert difference.max() <= 1  # the same function: at most a rounding step of the 8-bit output
    for bad in ("yes", 1, None):
        with pytest.raises(OptionError, match="fold_attention must be True or False, got"):
            Deblurrer(tiny_weights, backend="torch", device="cpu", fold_attention=bad)
        with pytest.raises(OptionError, match="fold_attention must be True or False, got"):
            TorchBackend(tiny_weights, device="cpu", fold_attention=bad)
    for bad in ("yes", 1):
        with pytest.raises(OptionError, match=r"channels_last must be True, False or None \(automatic\), got"):
            Deblurrer(tiny_weights, backend="torch", device="cpu", channels_last=bad)
        with pytest.raises(OptionError, match=r"channels_last must be True, False or None \(automatic\), got"):
            TorchBackend(tiny_weights, device="cpu", channels_last=bad)


def test_from_model_runs_the_model_as_given(tiny_model):
    """Export verification and drift compare with the network as trained: ``from_model`` neither folds nor
    changes the layout."""
    backend = TorchBackend.from_model(tiny_model)
    assert backend.metadata.attention == "trained" and not backend.channels_last
    x = _batch(1, 32, 48)
    np.testing.assert_array_equal(backend.run(x), _trained_output(tiny_model, x))
