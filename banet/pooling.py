"""Strip pooling written with MatMuls so it exports exactly to ONNX for any height and width.

BANet's blur-aware attention averages each feature map into ``n`` strips along one axis
(PyTorch's ``AdaptiveAvgPool2d((None, n))`` / ``((n, None))``) and resizes the strips back with
nearest-neighbour interpolation. Exporters cannot express adaptive pooling with dynamic sizes (see
``deployment-facts.md``), so both steps are written here as a MatMul with a matrix that is built from the
runtime length using integer arithmetic only:

* bin ``i`` of a length-``L`` axis covers indices ``floor(i*L/n) .. ceil((i+1)*L/n) - 1``; index ``l`` is in
  bin ``i`` exactly when ``(l + 1) * n > i * L`` and ``l * n < (i + 1) * L``;
* nearest resize from ``n`` back to ``L`` reads index ``floor(j * s)`` with ``s = float32(n) / float32(L)``,
  PyTorch's ``upsample_nearest`` arithmetic. This is *not* always ``floor(j*n/L)``: when ``j*n/L`` is an integer
  ``k``, float32 rounding of ``s`` and of ``j * s`` can land one index lower (for example ``n = 3``, ``L = 123``),
  and trained weights expect PyTorch's choice. :func:`nearest_source` reproduces that choice exactly with
  integers (it emulates the two float32 roundings), because float arithmetic in the graph is not computed the same
  everywhere: OpenVINO, compiling for dynamic shapes, rewrites ``n / L`` as ``n * (1 / L)`` and picked the other
  index at about one length in seven that ``n`` divides (74-85 dB from ONNX Runtime instead of 147 dB).

Only the averaging itself (``member / count``) is float, in the feature dtype, so float16 graphs stay
type-consistent.
"""

from __future__ import annotations

import functools

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
    return (nearest_source(pos, length, bins) == idx).to(dtype)


#: Lengths up to 2**20 are handled: below ``2**23 / bins`` (so a quotient that is not whole keeps its floor in
#: float32) and far inside int64 for every product below. Exports declare at most 4096 (``--max-size``).
_MAX_LENGTH_BITS = 20


def _resize_tables(bins: int, pos: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`nearest_source`'s constants for ``bins``: ``bins * 2**i`` and ``2**i`` for the exponent, powers of
    two, and for ``k = 0..bins`` the reciprocal of half the float32 spacing just below ``k``.

    Kept per device for eager runs, so a forward pass never copies them to a GPU (CUDA-graph capture refuses a
    copy from host memory); made afresh while tracing (an export or torch.compile sees fake tensors, which must
    not outlive the trace)."""
    if type(pos) is torch.Tensor and not torch.jit.is_tracing():
        return _kept_tables(bins, pos.device)
    return _make_tables(bins, pos.device)


def _make_tables(bins: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    def table(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    return (table([bins << i for i in range(_MAX_LENGTH_BITS + 1)]),
            table([1 << i for i in range(1, bins.bit_length() + 1)]),
            table([1 << i for i in range(23 + _MAX_LENGTH_BITS + 2)]),
            table([0] + [1 << (25 - (k - 1).bit_length()) for k in range(1, bins + 1)]))


_kept_tables = functools.lru_cache(maxsize=64)(_make_tables)


def nearest_source(pos: Tensor, length: int | Tensor, bins: int) -> Tensor:
    """``floor(float32(pos * float32(bins / length)))`` for int64 ``pos`` in ``[0, length)``, in integers only.

    Where ``pos * bins / length`` is not an integer the float32 value is within ``bins * 2**-23`` of the true one,
    and the true one at least ``1 / length`` from an integer, so its floor is the integer quotient. Where it is an
    integer ``k`` the float32 result is ``k`` or just below it: ``s = M * 2**-P`` (``M`` the 24-bit significand,
    rounded to nearest) falls short of ``bins / length`` by ``R / (length * 2**P)``, so ``pos * s`` falls short
    of ``k`` by ``k * R / (bins * 2**P)``, and float32 rounds that back up to ``k`` unless it exceeds half the
    spacing of the float32 numbers just below ``k``, ``2**(ceil(log2 k) - 25)``. tests/banet/test_pooling.py
    compares the result with ``F.interpolate`` on every length up to 1,100 and at the lengths up to 2**17 where
    float32 rounds down.
    """
    up, down, powers, halves = _resize_tables(bins, pos)
    scaled = pos * bins
    quotient = torch.div(scaled, length, rounding_mode="trunc")
    on_integer = (scaled - quotient * length == 0) & (pos > 0)
    # exponent P of s: 2**23 <= bins * 2**P / length < 2**24
    exponent = 23 + (up < length).sum(dim=0, keepdim=True) - (down * length <= bins).sum(dim=0, keepdim=True)
    numerator = bins * powers.index_select(0, exponent)
    significand = torch.div(numerator, length, rounding_mode="trunc")
    remainder = numerator - significand * length
    # no ties (remainder * 2 == length): that needs the odd 2 * significand + 1 > bins to divide bins * 2**(P + 1)
    rounded_down = (remainder > 0) & (remainder * 2 < length)
    falls_below = quotient * remainder * halves[quotient] > numerator
    return quotient - (on_integer & rounded_down & falls_below).to(torch.int64)


def strip_pool_width(x: Tensor, bins: int) -> Tensor:
    """``AdaptiveAvgPool2d((None, bins))``: ``[N, C, H, W] -> [N, C, H, bins]``."""
    return torch.matmul(x, adaptive_pool_matrix(x.shape[3], bins, x.dtype, x.device))


def strip_pool_height(x: Tensor, bins: int) -> Tensor:
    """``AdaptiveAvgPool2d((bins, None))``: ``[N, C, H, W] -> [N, C, bins, W]``."""
    return torch.matmul(adaptive_pool_matrix(x.shape[2], bins, x.dtype, x.device).transpose(0, 1), x)


def resize_width_nearest(x: Tensor, width: int | Tensor, bins: int) -> Tensor:
    """Nearest resize of the last axis from ``bins`` to ``width``: ``[N, C, H, bins] -> [N, C, H, width]``.

    ``bins`` is passed as a Python int (not read from ``x.shape``, which is a traced value during export): the
    resize index arithmetic is built from it as constants."""
    return torch.matmul(x, nearest_resize_matrix(width, bins, x.dtype, x.device).transpose(0, 1))


def resize_height_nearest(x: Tensor, height: int | Tensor, bins: int) -> Tensor:
    """Nearest resize of the height axis from ``bins`` to ``height``: ``[N, C, bins, W] -> [N, C, height, W]``."""
    return torch.matmul(nearest_resize_matrix(height, bins, x.dtype, x.device), x)
