"""The network in the form it is deployed in: the same function as :class:`banet.model.BANet`, fewer operations.

The blur-aware attention (:class:`banet.model.BlurAwareAttention`) computes four strip-context branches, resizes
each to full resolution, concatenates them and mixes them with a 1x1 convolution (``fuse_conv``). Everything
between the strips' own convolutions and that mix is linear, so the mix can move in front of the resize:
``fuse_conv(cat(resize(conv_k(pool(x)))))`` is ``sum_k resize(V_k(pool(x)))`` with ``V_k`` the strip convolution
``conv_k`` followed by ``fuse_conv``'s slice for branch ``k``, one convolution with folded weights. The branches'
pooled inputs and outputs then stack along the strip axis, so the whole context is two pooling matrix products,
the strip convolutions on a few columns/rows, and two resize products straight into the fused channels: no
full-resolution concatenation of 4 x ``mid`` channels and no full-resolution 1x1 convolution.

Measured (default network, 720x1280, 2 threads, AMD EPYC, ``python -m benchmarks.run`` before and after:
``benchmarks/results/before-folding_AMD-EPYC_2026-12-06.md`` and ``AMD-EPYC_2026-12-06.md``): ONNX Runtime FP32
1,958 -> 1,714 ms, INT8 996 -> 853 ms; OpenVINO FP32 1,953 -> 1,756 ms, INT8 690 -> 621 ms, BF16 904 -> 828 ms.
Outputs within 2e-7 of the trained form.

The checkpoint keeps the paper's module tree (authors' weights load unchanged); only exports and inference use
this form (:func:`fold_attention`). Folded weights are computed in float64 and stored in the model's dtype.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from banet.model import STRIP_BINS, BANet, BlurAwareAttention
from banet.pooling import StripMatrices


def _folded_conv(mix: Tensor, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` followed by the 1x1 convolution whose weight is ``mix`` ([out, conv.out_channels]), as one
    convolution (neither has a bias)."""
    weight = torch.einsum("om,mcij->ocij", mix.double(), conv.weight.double()).to(conv.weight.dtype)
    folded = nn.Conv2d(conv.in_channels, mix.shape[0], conv.kernel_size, padding=conv.padding,
                       dilation=conv.dilation, bias=False).to(conv.weight.device)
    with torch.no_grad():
        folded.weight.copy_(weight)  # a fresh contiguous parameter, whatever the einsum's strides
    return folded


class FoldedAttention(nn.Module):
    """:class:`BlurAwareAttention` with ``fuse_conv`` folded into the strip convolutions (module docstring).

    Submodules: ``strip_h``/``strip_w`` (the whole-axis means' convolutions, folded), ``strip_convs`` (one per
    entry of :data:`banet.model.STRIP_BINS`, folded) and the trained ``conv_final``, ``mask_conv_1``,
    ``mask_conv_2`` under their own names (exported nodes keep the block names INT8 tools group by).
    """

    def __init__(self, attention: BlurAwareAttention) -> None:
        super().__init__()
        mid = attention.conv_1_h.out_channels
        mix = attention.fuse_conv.weight[:, :, 0, 0]  # [fused, 4 * mid]: branch k is columns k*mid..(k+1)*mid
        self.strip_h = _folded_conv(mix[:, :mid], attention.conv_1_h)
        self.strip_w = _folded_conv(mix[:, :mid], attention.conv_1_w)
        self.strip_convs = nn.ModuleList(
            _folded_conv(mix[:, (k + 1) * mid:(k + 2) * mid], getattr(attention, f"conv_{bins}"))
            for k, bins in enumerate(STRIP_BINS))
        self.conv_final = copy.deepcopy(attention.conv_final)
        self.mask_conv_1 = copy.deepcopy(attention.mask_conv_1)
        self.mask_conv_2 = copy.deepcopy(attention.mask_conv_2)

    def strip_context(self, x: Tensor, strips: StripMatrices) -> Tensor:
        """``fuse_conv(strip_features(x))`` of the trained module, computed in the fused channels."""
        pool_w, pool_h, resize_w, resize_h = strips.stacked(STRIP_BINS)
        along_w = torch.split(torch.matmul(x, pool_w), list(STRIP_BINS), dim=3)  # [N, C, H, sum(bins)]
        along_h = torch.split(torch.matmul(pool_h.transpose(0, 1), x), list(STRIP_BINS), dim=2)
        strips_w = torch.cat([conv(part) for conv, part in zip(self.strip_convs, along_w)], dim=3)
        strips_h = torch.cat([conv(part) for conv, part in zip(self.strip_convs, along_h)], dim=2)
        context = torch.matmul(strips_w, resize_w.transpose(0, 1)) + torch.matmul(resize_h, strips_h)
        return context + self.strip_h(x.mean(dim=3, keepdim=True)) + self.strip_w(x.mean(dim=2, keepdim=True))

    def forward(self, x: Tensor, strips: StripMatrices | None = None) -> Tensor:
        strips = strips or StripMatrices.for_features(x, STRIP_BINS)
        out = x * torch.sigmoid(self.conv_final(torch.relu(self.strip_context(x, strips))))
        mask = torch.sigmoid(self.mask_conv_2(torch.relu(self.mask_conv_1(out))))
        return out * mask


def fold_attention(model: BANet) -> BANet:
    """A copy of ``model`` whose every BAM runs :class:`FoldedAttention` (the same function, fewer operations);
    ``model`` itself is left as it is. A model already folded is copied as it is."""
    folded = copy.deepcopy(model)
    for k in range(1, folded.config.num_bams + 1):
        bam = getattr(folded, f"BAM_{k}")
        if isinstance(bam.BA, BlurAwareAttention):
            bam.BA = FoldedAttention(bam.BA)
    return folded


def is_folded(model: BANet) -> bool:
    """Whether ``model``'s attention is in the folded form."""
    return model.config.num_bams > 0 and isinstance(model.BAM_1.BA, FoldedAttention)
