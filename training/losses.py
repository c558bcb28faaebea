"""The authors' training loss: Charbonnier + 0.01 * L1 between 2-D FFTs of output and target."""

from __future__ import annotations

import torch
from torch import Tensor


def charbonnier(output: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean of sqrt((output - target)^2 + eps^2): a smooth L1 that is robust to outliers."""
    return torch.sqrt((output - target) ** 2 + eps * eps).mean()


def fft_l1(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the real and imaginary parts of the 2-D FFTs (computed in float32)."""
    out_f = torch.fft.rfft2(output.float())
    tgt_f = torch.fft.rfft2(target.float())
    return (torch.view_as_real(out_f) - torch.view_as_real(tgt_f)).abs().mean()


def deblur_loss(output: Tensor, target: Tensor, fft_weight: float = 0.01) -> Tensor:
    """Charbonnier(eps 1e-3) + ``fft_weight`` * FFT-L1, as in the authors' code."""
    return charbonnier(output.float(), target.float()) + fft_weight * fft_l1(output, target)
