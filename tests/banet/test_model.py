"""BANet's module tree, parameter count and equality with a reference built on PyTorch's pooling."""

import pytest
import torch
import torch.nn.functional as F

from banet.config import FULL, PLUS, BANetConfig
from banet.model import BANet, BlurAwareAttention, count_parameters


def reference_strip_features(ba: BlurAwareAttention, x: torch.Tensor) -> torch.Tensor:
    """BA's strip pooling written the way the authors' code does it (AdaptiveAvgPool2d + interpolate)."""
    h, w = x.shape[2:]
    s1 = (ba.conv_1_h(F.adaptive_avg_pool2d(x, (None, 1))).expand(-1, -1, h, w)
          + ba.conv_1_w(F.adaptive_avg_pool2d(x, (1, None))).expand(-1, -1, h, w))
    out = [s1]
    for n in (3, 5, 7):
        conv = getattr(ba, f"conv_{n}")
        out.append(F.interpolate(conv(F.adaptive_avg_pool2d(x, (None, n))), (h, w))
                   + F.interpolate(conv(F.adaptive_avg_pool2d(x, (n, None))), (h, w)))
    return torch.cat(out, dim=1)


def test_full_network_has_the_released_parameter_count() -> None:
    assert count_parameters(BANet(FULL)) == 17_988_547


def test_module_tree_names_match_the_authors_checkpoints() -> None:
    keys = set(BANet(BANetConfig(num_bams=2, dim_1=8, dim_2=16)).state_dict())
    for key in ["en_layer1.0.weight", "en_layer2.0.bias", "BAM_1.input_conv.weight", "BAM_2.BA.conv_1_h.weight",
                "BAM_1.BA.conv_1_w.weight", "BAM_1.BA.conv_3.weight", "BAM_1.BA.conv_7.weight",
                "BAM_1.BA.fuse_conv.weight", "BAM_1.BA.conv_final.bias", "BAM_1.BA.mask_conv_2.weight",
                "BAM_1.content_conv_d5_2.weight", "BAM_1.fuse_conv_1.bias", "BAM_1.final_conv.weight",
                "de_layer1.0.weight", "de_layer2.0.weight", "de_layer3.0.bias"]:
        assert key in keys, key
    assert not any("pool" in k or "shortcut" in k for k in keys)
    assert "BAM_1.BA.conv_3.bias" not in keys and "BAM_1.BA.fuse_conv.bias" not in keys


def test_banet_plus_layout() -> None:
    model = BANet(PLUS)
    assert model.BAM_1.BA.fuse_conv.weight.shape == (192, 384, 1, 1)
    assert model.BAM_1.BA.conv_final.weight.shape == (192, 192, 1, 1)


@pytest.mark.parametrize("shape", [(1, 16, 8, 8), (2, 16, 9, 13), (1, 16, 23, 5), (1, 16, 2, 40)])
def test_strip_features_equal_reference(shape) -> None:
    torch.manual_seed(0)
    ba = BlurAwareAttention(16)
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(ba.strip_features(x), reference_strip_features(ba, x), atol=1e-6, rtol=1e-5)


def test_forward_shapes_and_residual() -> None:
    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=2, dim_1=8, dim_2=16)).eval()
    x = torch.randn(2, 3, 18, 26)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    with torch.no_grad():
        model.de_layer3[0].weight.zero_()
        model.de_layer3[0].bias.zero_()
        torch.testing.assert_close(model(x), x)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="even"):
        BANetConfig(dim_2=15)
    with pytest.raises(ValueError, match="num_bams"):
        BANetConfig(num_bams=0)
    assert BANetConfig.from_json(FULL.to_json()) == FULL
    with pytest.raises(ValueError, match="unknown"):
        BANetConfig.from_dict({"num_bams": 4, "depth": 3})
