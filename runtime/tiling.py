"""Overlapping tiles with smooth blending, for images larger than an engine's profile or a memory budget.

Works on NCHW network-input arrays (after pre-processing, before post-processing), so it serves every
backend. Tiles overlap by ``overlap`` pixels and are blended with linear ramps across the overlap, which hides
seams; BANet's strip pooling sees whole rows/columns of a tile only, so a tiled result is close to, not
identical with, an untiled one (tests measure how close).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from banet.config import BANetConfig

#: Peak bytes of working memory per input pixel, per channel of width (see :func:`activation_bytes_per_pixel`).
_BYTES_PER_PIXEL_PER_CHANNEL = 28


def activation_bytes_per_pixel(config: BANetConfig) -> int:
    """Estimated peak working memory of one forward pass per input pixel, in bytes.

    Full-resolution features have ``dim_1`` channels, half-resolution ones ``dim_2`` (a quarter of the pixels);
    28 bytes per pixel per channel (1.3 KB/pixel for the default network, stack-4 32/64) covers its measured
    peaks: ONNX Runtime CPU without its memory arena 1.3 KB/pixel (966x964), PyTorch CPU 0.85 KB/pixel
    (1024x1024). ``python -m benchmarks.memory`` re-measures whole photos.
    """
    return _BYTES_PER_PIXEL_PER_CHANNEL * (config.dim_1 + config.dim_2 // 4)


def budget_tile(height: int, width: int, budget_pixels: int, multiple: int, min_side: int) -> tuple[int, int]:
    """The largest tile (h, w) <= (height, width) with h * w <= ``budget_pixels``, sides multiples of
    ``multiple`` and at least ``min_side`` (so tiles still overlap usefully when the budget is tiny)."""
    if height * width <= budget_pixels:
        return height, width

    def down(value: float) -> int:
        return max(min_side, int(value) - int(value) % multiple)

    th = min(height, down(math.sqrt(budget_pixels)))
    tw = min(width, down(budget_pixels / th))
    if tw == width:  # a narrow image: give the spare budget back to the height
        th = min(height, down(budget_pixels / tw))
    return th, tw


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0 pixels, got {overlap}")
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weight: ramps up over ``overlap`` at inner edges, flat 1 at image borders."""
    weight = np.ones(size, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap if overlap > 0 else np.zeros(0, np.float32)
    n = min(overlap, size)
    if not at_start and n:
        weight[:n] = ramp[:n]
    if not at_end and n:
        weight[size - n:] = np.minimum(weight[size - n:], ramp[:n][::-1])
    return weight


def run_tiled(batch: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], tile: tuple[int, int],
              overlap: int) -> np.ndarray:
    """Run ``forward`` on overlapping tiles of an NCHW batch and blend the outputs into one NCHW array.

    ``tile`` is (height, width) and must fit the network (multiples of its size multiple); tiles at the
    right/bottom are shifted inwards so every tile has exactly that size.
    """
    n, c, height, width = batch.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    out = np.zeros((n, 3, height, width), np.float32)
    total = np.zeros((1, 1, height, width), np.float32)
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    for y in ys:
        wy = _ramp(th, overlap, y == 0, y + th == height)
        for x in xs:
            wx = _ramp(tw, overlap, x == 0, x + tw == width)
            weight = wy[:, None] * wx[None, :]
            result = forward(np.ascontiguousarray(batch[:, :, y:y + th, x:x + tw]))
            out[:, :, y:y + th, x:x + tw] += result * weight
            total[:, :, y:y + th, x:x + tw] += weight
    out /= total
    return out
