"""BANet (Tsai et al., "BANet: Blur-aware Attention Networks for Dynamic Scene Deblurring").

Module tree and parameter names match the authors' training code exactly, so their checkpoints load with
``strict=True``. Strip pooling uses :mod:`banet.pooling`, which is numerically the same as PyTorch's adaptive
pooling + nearest interpolation but exports to ONNX with dynamic height and width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from banet.config import BANetConfig
from banet.pooling import StripMatrices

STRIP_BINS = (3, 5, 7)


def _conv3x3(cin: int, cout: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class BlurAwareAttention(nn.Module):
    """BA: multi-kernel strip pooling -> attention mask, then a convolutional mask on the result."""

    def __init__(self, channels: int, fuse_full: bool = False) -> None:
        super().__init__()
        mid = channels // 2
        fused = channels if fuse_full else mid
        self.conv_1_h = nn.Conv2d(channels, mid, (3, 1), padding=(1, 0), bias=False)
        self.conv_1_w = nn.Conv2d(channels, mid, (1, 3), padding=(0, 1), bias=False)
        for bins in STRIP_BINS:
            setattr(self, f"conv_{bins}", _conv3x3(channels, mid, bias=False))
        self.fuse_conv = nn.Conv2d(4 * mid, fused, 1, bias=False)
        self.conv_final = nn.Conv2d(fused, channels, 1, bias=True)
        self.mask_conv_1 = _conv3x3(channels, channels)
        self.mask_conv_2 = _conv3x3(channels, channels)

    def strip_features(self, x: Tensor, strips: StripMatrices | None = None) -> Tensor:
        """Sum of horizontal and vertical strip-pooled context for kernel sets 1, 3, 5, 7, concatenated.

        ``strips``: the pooling matrices for ``x``'s size, shared by every BA at it (built here when not given)."""
        strips = strips or StripMatrices.for_features(x, STRIP_BINS)
        parts = [self.conv_1_h(x.mean(dim=3, keepdim=True)) + self.conv_1_w(x.mean(dim=2, keepdim=True))]
        parts += [strips.pool_then_resize(x, bins, getattr(self, f"conv_{bins}")) for bins in STRIP_BINS]
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor, strips: StripMatrices | None = None) -> Tensor:
        attention = torch.relu(self.fuse_conv(self.strip_features(x, strips)))
        out = x * torch.sigmoid(self.conv_final(attention))
        mask = torch.sigmoid(self.mask_conv_2(torch.relu(self.mask_conv_1(out))))
        return out * mask


class BlurAwareModule(nn.Module):
    """BAM: BA in parallel with cascaded parallel dilated convolutions (CPDC), fused, plus a residual."""

    def __init__(self, channels: int, fuse_full: bool = False) -> None:
        super().__init__()
        half = channels // 2
        self.input_conv = _conv3x3(channels, channels)
        self.BA = BlurAwareAttention(channels, fuse_full)
        for suffix in ("", "_2"):
            for dilation in (1, 3, 5):
                setattr(self, f"content_conv_d{dilation}{suffix}", _conv3x3(channels, half, dilation))
            if not suffix:
                self.fuse_conv_1 = _conv3x3(3 * half, channels)
        self.final_conv = _conv3x3(5 * half, channels)
        self.act = nn.LeakyReLU(0.2)

    def _dilated(self, x: Tensor, suffix: str) -> Tensor:
        return torch.cat([getattr(self, f"content_conv_d{d}{suffix}")(x) for d in (1, 3, 5)], dim=1)

    def forward(self, x: Tensor, strips: StripMatrices | None = None) -> Tensor:
        features = self.act(self.input_conv(x))
        attended = self.BA(features, strips)
        content = self._dilated(self.act(self.fuse_conv_1(self._dilated(features, ""))), "_2")
        return self.act(self.final_conv(torch.cat([content, attended], dim=1)) + x)


class BANet(nn.Module):
    """The full network: a stride-2 encoder, ``num_bams`` BAMs, a transposed-conv decoder, global residual.

    Input and output follow :mod:`banet.conventions`: BGR, ``pixel / 255 - 0.5``, NCHW float, even H and W.
    """

    def __init__(self, config: BANetConfig | None = None) -> None:
        super().__init__()
        self.config = config or BANetConfig()
        c1, c2 = self.config.dim_1, self.config.dim_2
        self.en_layer1 = nn.Sequential(_conv3x3(3, c1), nn.LeakyReLU(0.2))
        self.en_layer2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        for k in range(1, self.config.num_bams + 1):
            setattr(self, f"BAM_{k}", BlurAwareModule(c2, self.config.ba_fuse_full))
        self.de_layer1 = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.de_layer2 = nn.Sequential(_conv3x3(2 * c1, c1), nn.LeakyReLU(0.2))
        self.de_layer3 = nn.Sequential(_conv3x3(c1, 3))

    def residual(self, x: Tensor) -> Tensor:
        """Everything but the global skip: the correction the network adds to its input."""
        skip = self.en_layer1(x)
        h = self.en_layer2(skip)
        strips = StripMatrices.for_features(h, STRIP_BINS)  # every BAM runs at this size: one set for all
        for k in range(1, self.config.num_bams + 1):
            h = getattr(self, f"BAM_{k}")(h, strips)
        h = self.de_layer2(torch.cat([self.de_layer1(h), skip], dim=1))
        return self.de_layer3(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + x


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (the released stack-10 network has 17,988,547)."""
    return sum(p.numel() for p in model.parameters())
