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
  index at about one length in seven that ``n`` divides (the app graph on OpenVINO: 65.10 dB at 246x98, refused),
  and it computes int64 graph arithmetic in int32 (:data:`MAX_LENGTH`).

Only the averaging itself (``member / count``) is float, in the feature dtype, so float16 graphs stay
type-consistent. The model builds the matrices once for all its BAMs (:class:`StripMatrices`) and eager runs keep
them per size (:func:`_matrix`); ``strip_pool_*`` and ``resize_*_nearest`` are the same matrices one operation at
a time, which the tests hold to PyTorch's own modules.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

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
    return _matrix(_pool_matrix, length, bins, dtype, device)


def nearest_resize_matrix(length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0/1 matrix ``[L, n]`` whose row ``j`` picks the source PyTorch's nearest resize n -> L picks."""
    return _matrix(_resize_matrix, length, bins, dtype, device)


def _pool_matrix(length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    pos, idx = _index_grid(length, bins, device)
    member = ((pos + 1) * bins > idx * length) & (pos * bins < (idx + 1) * length)
    member = member.to(dtype)
    return member / member.sum(dim=0, keepdim=True)


def _resize_matrix(length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    pos, idx = _index_grid(length, bins, device)
    return (nearest_source(pos, length, bins) == idx).to(dtype)


class _Traced(Exception):
    """A matrix built from fake tensors (torch.export, torch.compile): not kept."""


#: Matrices kept for eager runs (a length, bin count, dtype and device each; a few KB to ~100 KB apiece).
MATRIX_CACHE = 256


@functools.lru_cache(maxsize=MATRIX_CACHE)
def _kept(build, length: int, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # a plain tensor even when first asked for under inference mode (the runtime's): training reuses it in autograd
    with torch.inference_mode(False), torch.no_grad():
        matrix = build(length, bins, dtype, device)
    if type(matrix) is not torch.Tensor:
        raise _Traced
    return matrix


_holders = threading.local()


@contextlib.contextmanager
def held_matrices() -> Iterator[list[Tensor]]:
    """A list that collects every kept matrix handed out in this thread while the block runs: what a CUDA graph
    captured in the block reads by address. Its owner holds them for as long as it replays the graph: the kept
    matrices are a bounded LRU, and a replay (no Python runs) never refreshes them, so a graph kept in use while
    other sizes ran read matrices freed and reused by then (wrong pixels)."""
    held: list[Tensor] = []
    stack = _holders.__dict__.setdefault("stack", [])
    stack.append(held)
    try:
        yield held
    finally:
        stack.remove(held)


def _matrix(build, length: int | Tensor, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``build(...)``, kept per (length, bins, dtype, device) when ``length`` is a plain int outside tracing.

    An eager forward pass then builds no matrix after its first at a size: the index arithmetic is dozens of tiny
    operations per strip, which dominated small inputs on a CPU and is kernel launches on a GPU (and a kept matrix
    is allocated before any CUDA-graph capture, during its warm-up). While tracing, ``length`` is a traced value
    or the tensors are fake, and the matrix is built in the graph instead (never kept: it must not outlive the
    trace). Callers only read the matrix."""
    if type(length) is int and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        try:
            matrix = _kept(build, length, bins, dtype, torch.device(device))
        except _Traced:
            pass
        else:
            for held in getattr(_holders, "stack", ()):
                held.append(matrix)
            return matrix
    return build(length, bins, dtype, device)


#: Longest axis the resize index handles: every intermediate below stays under 2**31 up to it, because OpenVINO's
#: CPU plugin (and TensorRT where it can) computes int64 graph arithmetic in int32. Exports declare at most 4096
#: by default (``--max-size``).
MAX_LENGTH = 2**15
_BITS = MAX_LENGTH.bit_length()


def _resize_tables(bins: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`nearest_source`'s constants for ``bins``: ``bins * 2**i`` and ``2**i`` for the exponent, powers of
    two, and ``ceil(log2 k)`` for ``k = 0..bins``."""
    def table(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    return (table([bins << i for i in range(_BITS + 1)]),
            table([1 << i for i in range(1, bins.bit_length() + 1)]),
            table([1 << i for i in range(_BITS + bins.bit_length() + 8)]),
            table([0] + [(k - 1).bit_length() for k in range(1, bins + 1)]))


def _mod(a: Tensor, b: Tensor) -> Tensor:
    """``a mod b`` for non-negative integers (a truncating Div, which every runtime has for integers)."""
    return a - torch.div(a, b, rounding_mode="trunc") * b


def nearest_source(pos: Tensor, length: int | Tensor, bins: int) -> Tensor:
    """``floor(float32(pos * float32(bins / length)))`` for int64 ``pos`` in ``[0, length)``, in integers only.

    Where ``pos * bins / length`` is not an integer the float32 value is within ``bins * 2**-23`` of the true one,
    and the true one at least ``1 / length`` from an integer, so its floor is the integer quotient. Where it is an
    integer ``k`` the float32 result is ``k`` or just below it. ``s = float32(bins / length)`` is ``M * 2**-P``
    with ``2**23 <= M < 2**24``; rounded down it falls short by ``R / (length * 2**P)``, ``R = bins * 2**P mod
    length``, so ``pos * s`` falls short of ``k`` by ``k * R / (bins * 2**P)``, and float32 rounds that back up to
    ``k`` unless it exceeds half the spacing of the float32 numbers just below ``k``, ``2**(ceil(log2 k) - 25)``:
    the index is ``k - 1`` exactly when ``k * R * 2**(2 - ceil(log2 k) - t) > bins`` (``P = 23 + t``). Every
    intermediate stays below 2**31 for lengths up to :data:`MAX_LENGTH`. tests/banet/test_pooling.py compares
    the result with ``F.interpolate`` on every length up to 1,100 and at the lengths up to 2**15 where float32
    rounds down, and the exported graph on OpenVINO's int32 arithmetic with PyTorch.
    """
    up, down, powers, log2_ceil = _resize_tables(bins, pos.device)
    length = torch.ones((1,), dtype=torch.int64, device=pos.device) * length  # int or traced size -> [1]
    scaled = pos * bins
    quotient = torch.div(scaled, length, rounding_mode="trunc")
    on_integer = (scaled - quotient * length == 0) & (pos > 0)
    # t: 2**23 <= bins * 2**(23 + t) / length < 2**24
    t = (up < length).sum(dim=0, keepdim=True) - (down * length <= bins).sum(dim=0, keepdim=True)
    # R = bins * 2**(23 + t) mod length, as (bins mod L) * (2**16 mod L) * (2**(7 + t) mod L), each product < L**2
    two16 = _mod(torch.full_like(length, 1 << 16), length)
    power = _mod(two16 * _mod(powers.index_select(0, 7 + t), length), length)
    remainder = _mod(_mod(torch.full_like(length, bins), length) * power, length)
    # no ties (remainder * 2 == length): that needs the odd 2 * M + 1 > bins to divide bins * 2**(P + 1)
    rounded_down = (remainder > 0) & (remainder * 2 < length)
    shift = 2 - log2_ceil[quotient] - t
    left = quotient * remainder * powers[torch.where(shift > 0, shift, 0)]
    right = bins * powers[torch.where(shift < 0, -shift, 0)]
    return quotient - (on_integer & rounded_down & (left > right)).to(torch.int64)


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


@dataclass(frozen=True)
class StripMatrices:
    """Every strip-pooling matrix for one feature size: built once and shared by all the BAs that run at it.

    All of BANet's BAMs run at the same (half) resolution, so one set serves the whole network: an exported graph
    computes each matrix once instead of once per BAM (the default's 4, the paper's 10), which is that much less
    index arithmetic for every runtime to execute per call (on a GPU: tiny kernels)."""

    #: per bin count: ``[W, n]`` averaging, ``[H, n]`` averaging, ``[W, n]`` and ``[H, n]`` selection matrices
    pool_width: dict[int, Tensor]
    pool_height: dict[int, Tensor]
    resize_width: dict[int, Tensor]
    resize_height: dict[int, Tensor]

    @classmethod
    def for_features(cls, x: Tensor, bins: tuple[int, ...]) -> StripMatrices:
        """The matrices for ``x``'s height and width (``[N, C, H, W]``), dtype and device."""
        height, width = x.shape[2], x.shape[3]
        return cls({n: adaptive_pool_matrix(width, n, x.dtype, x.device) for n in bins},
                   {n: adaptive_pool_matrix(height, n, x.dtype, x.device) for n in bins},
                   {n: nearest_resize_matrix(width, n, x.dtype, x.device) for n in bins},
                   {n: nearest_resize_matrix(height, n, x.dtype, x.device) for n in bins})

    def stacked(self, bins: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The matrices of every bin count in ``bins``, side by side: ``[W, sum(bins)]`` and ``[H, sum(bins)]``
        averaging, ``[W, sum(bins)]`` and ``[H, sum(bins)]`` selection (the folded attention pools and resizes all
        strips in one product each). Built once per instance, so every BA sharing it shares them in a graph too."""
        cache = self.__dict__.setdefault("_stacked", {})
        if bins not in cache:
            cache[bins] = tuple(torch.cat([table[n] for n in bins], dim=1) for table in (
                self.pool_width, self.pool_height, self.resize_width, self.resize_height))
        return cache[bins]

    def pool_then_resize(self, x: Tensor, bins: int, conv) -> Tensor:
        """``resize(conv(pool(x)))`` along the width plus the same along the height: one BA strip branch."""
        along_w = torch.matmul(conv(torch.matmul(x, self.pool_width[bins])), self.resize_width[bins].transpose(0, 1))
        along_h = torch.matmul(self.resize_height[bins],
                               conv(torch.matmul(self.pool_height[bins].transpose(0, 1), x)))
        return along_w + along_h
