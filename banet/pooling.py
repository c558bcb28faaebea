"""Strip pooling written with MatMuls so it exports exactly to ONNX for any height and width.

BANet's blur-aware attention averages each feature map into ``n`` strips along one axis
(PyTorch's ``AdaptiveAvgPool2d((None, n))`` / ``((n, None))``) and resizes the strips back with
nearest-neighbour interpolation. Exporters cannot express adaptive pooling with dynamic sizes (see
``deployment-facts.md``), so both steps are written here as a MatMul with a matrix that is built from the
runtime length using only integer comparisons:

* bin ``i`` of a length-``L`` axis covers indices ``floor(i*L/n) .. ceil((i+1)*L/n) - 1``; index ``l`` is in
  bin ``i`` exactly when ``(l + 1) * n > i * L`` and ``l * n < (i + 1) * L``;
* nearest resize from ``n`` back to ``L`` reads index ``floor(j * s)`` with ``s = float32(n) / float32(L)``,
  computed in float32 exactly as PyTorch's ``upsample_nearest`` kernel does. This is *not* always
  ``floor(j*n/L)``: when ``j*n/L`` is an integer, float32 rounding of ``s`` can land one index lower (for
  example ``n = 3``, ``L = 123``), and trained weights expect PyTorch's choice, so we reproduce it.

The pooling side uses integer comparisons only; the resize side does its arithmetic in float32 whatever the
feature dtype, so float16 graphs stay type-consistent (every Div has float32 on both sides).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _index_grid(length: int | Tensor, bins: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Position column ``[L, 1]`` and bin row ``[1, n]``, int64.

    ``length`` stays whatever the caller got from ``x.shape`` (an int in eager mode, a traced value during
    export) and is only ever used in arithmetic, never turned into a constant tensor.
    """
    positions = torch.arange(length, device=device, dtype=torch.int64).unsqueeze(1)
    bin_ids = torch.arange(bins, device=device, dtype=torch.int64).unsqueeze(0)
    return positions, bin_ids


def adaptive_pool_matrix(length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Averaging matrix ``[L, n]`` whose column ``i`` averages bin ``i`` of an adaptive average pool."""
    pos, idx = _index_grid(length, bins, device)
    member = ((pos + 1) * bins > idx * length) & (pos * bins < (idx + 1) * length)
    member = member.to(dtype)
    return member / member.sum(dim=0, keepdim=True)


def nearest_resize_matrix(length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0/1 matrix ``[L, n]`` whose row ``j`` picks the source PyTorch's nearest resize n -> L picks."""
    pos, idx = _index_grid(length, bins, device)
    length_f = torch.ones((), device=device, dtype=torch.float32) * length
    # A true float32 division, as in PyTorch's kernel (``bins / tensor`` would multiply by a reciprocal).
    scale = torch.div(torch.full((), float(bins), device=device, dtype=torch.float32), length_f)
    source = torch.floor(pos.to(torch.float32) * scale).to(torch.int64)
    return (source == idx).to(dtype)


def strip_pool_width(x: Tensor, bins: int) -> Tensor:
    """``AdaptiveAvgPool2d((None, bins))``: ``[N, C, H, W] -> [N, C, H, bins]``."""
    return torch.matmul(x, adaptive_pool_matrix(x.shape[3], bins, x.dtype, x.device))


def strip_pool_height(x: Tensor, bins: int) -> Tensor:
    """``AdaptiveAvgPool2d((bins, None))``: ``[N, C, H, W] -> [N, C, bins, W]``."""
    return torch.matmul(adaptive_pool_matrix(x.shape[2], bins, x.dtype, x.device).transpose(0, 1), x)


def resize_width_nearest(x: Tensor, width: int | Tensor) -> Tensor:
    """Nearest resize of the last axis from ``n`` to ``width``: ``[N, C, H, n] -> [N, C, H, width]``."""
    return torch.matmul(x, nearest_resize_matrix(width, x.shape[3], x.dtype, x.device).transpose(0, 1))


def resize_height_nearest(x: Tensor, height: int | Tensor) -> Tensor:
    """Nearest resize of the height axis from ``n`` to ``height``: ``[N, C, n, W] -> [N, C, height, W]``."""
    return torch.matmul(nearest_resize_matrix(height, x.shape[2], x.dtype, x.device), x)
