"""The authors' training loss (Charbonnier + 0.01 * L1 between 2-D FFTs of output and target), and an optional
"do no harm" penalty on crops the network made worse than its input (issue 18)."""

from __future__ import annotations

import torch
from torch import Tensor


def charbonnier(output: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean of sqrt((output - target)^2 + eps^2): a smooth L1 that is robust to outliers."""
    return per_image_charbonnier(output, target, eps).mean()


def fft_l1(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the real and imaginary parts of the 2-D FFTs (computed in float32)."""
    out_f = torch.fft.rfft2(output.float())
    tgt_f = torch.fft.rfft2(target.float())
    return (torch.view_as_real(out_f) - torch.view_as_real(tgt_f)).abs().mean()


def deblur_loss(output: Tensor, target: Tensor, fft_weight: float = 0.01) -> Tensor:
    """Charbonnier(eps 1e-3) + ``fft_weight`` * FFT-L1, as in the authors' code."""
    return charbonnier(output.float(), target.float()) + fft_weight * fft_l1(output, target)


def per_image_charbonnier(output: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier distance of each image of a batch (shape ``(N,)``)."""
    return torch.sqrt((output.float() - target.float()) ** 2 + eps * eps).flatten(1).mean(dim=1)


def harm_penalty(output: Tensor, target: Tensor, blurred: Tensor) -> Tensor:
    """Mean over the batch of max(0, d(output, target) - d(blurred, target)), d = Charbonnier.

    Zero for every crop the network improved; on a crop it made worse (a sharp input it altered, a texture it
    "restored" out of phase) the excess distance is penalised a second time. This is the training-time form of
    the acceptance rule "no image is made worse than its input".
    """
    excess = per_image_charbonnier(output, target) - per_image_charbonnier(blurred, target).detach()
    return torch.relu(excess).mean()
