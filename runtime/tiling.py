"""Overlapping tiles with smooth blending, for images larger than an engine's profile or a memory budget.

Works on NCHW network-input arrays (after pre-processing, before post-processing), so it serves every
backend. Tiles overlap by ``overlap`` pixels and are blended with linear ramps across the overlap, which hides
seams; BANet's strip pooling sees whole rows/columns of a tile only, so a tiled result is close to, not
identical with, an untiled one (tests measure how close).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Tile widths (the innermost image axis of the engines' layouts) are multiples of this where the budget allows:
#: OpenVINO's AMX kernels (bfloat16, int8) took 1.19-1.47x as long per pixel at widths 694 and 774 as at 704 and
#: 784 on an Intel Xeon (``python -m benchmarks.tile_widths``); f32 and ONNX Runtime within 5%.
WIDTH_MULTIPLE = 16


def budget_tile(height: int, width: int, budget_pixels: int, multiple: int, min_side: int,
                overlap: int = 0, max_side: tuple[int, int] | None = None) -> tuple[int, int]:
    """The tile (h, w) <= (height, width) with h * w <= ``budget_pixels``, sides multiples of ``multiple`` (and at
    least ``min_side``, so tiles still overlap usefully when the budget is tiny) and within ``max_side`` (an
    artifact's largest input) that covers the image with the fewest pixels computed.

    Tiles overlapping by ``overlap`` are sized evenly for their count: the square tile that fills the budget leaves
    the last tile of each row and column shifted far inwards (under the default CPU budget a 3024x4032 photo
    computed 1.47x its pixels that way, a 1080x1920 frame 1.73x), while even tiles compute 1.05-1.08x. Of plans
    within 1% of the least work, the one with no side over twice the other (each tile's strip pooling then sees a
    fair share of both axes), then the fewest tiles (fewer calls), then the squarest wins. Tile widths are
    multiples of :data:`WIDTH_MULTIPLE` where that still fits the budget and the sides' limits.
    """
    max_h, max_w = (min(height, max_side[0]), min(width, max_side[1])) if max_side else (height, width)
    if height * width <= budget_pixels and (max_h, max_w) == (height, width):
        return height, width
    plans = []
    for rows in range(1, height // max(min_side - overlap, 1) + 2):
        th = height if rows == 1 else min(height, max(min_side, _even_tile(height, rows, overlap, multiple)))
        if th > max_h:
            continue
        cap = min(max_w, budget_pixels // th)
        across = _width_multiple(cap, multiple, min_side, overlap) if cap < width else multiple
        cap -= cap % across if cap < width else 0
        if cap < min(min_side, width) or (cap < width and cap <= overlap):
            continue  # too tall for the budget: even the narrowest tile does not fit
        tw = width if cap >= width else _even_tile(width, -(-(width - overlap) // (cap - overlap)), overlap, across)
        work = _tile_count(height, th, overlap) * _tile_count(width, tw, overlap)
        plans.append((work * th * tw, work, max(th, tw) / min(th, tw), (th, tw)))
        if th <= min_side:
            break
    if not plans:  # the budget is below one min_side x min_side tile: the smallest tile there is
        return min(max_h, min_side), min(max_w, min_side)
    least = min(p[0] for p in plans)
    return min((p for p in plans if p[0] <= least * 1.01), key=lambda p: (p[2] > 2, p[1], p[2]))[3]


def tile_plan(height: int, width: int, budget_pixels: int | None, multiple: int, min_side: int,
              max_hw: tuple[int, int], overlap: int, tile: int | None = None) -> tuple[int, int] | None:
    """The tile (h, w) an image of ``height`` x ``width`` runs in, None when it runs whole: square tiles of ``tile``
    where given, else even tiles of at most ``budget_pixels`` (:func:`budget_tile`; None: no budget), within the
    largest input ``max_hw`` and at least ``min_side`` (and twice the overlap plus one ``multiple``). The one rule
    of the runtime's ``Deblurrer.tile_for`` and of the Triton repository's network model."""
    th, tw = min(tile or height, max_hw[0]), min(tile or width, max_hw[1])
    if tile is None:
        side = max(min_side, 2 * overlap + multiple)
        th, tw = budget_tile(height, width, th * tw if budget_pixels is None else budget_pixels, multiple, side,
                             overlap, (th, tw))
    return None if (th, tw) == (height, width) or (th >= height and tw >= width) else (th, tw)


def _width_multiple(cap: int, multiple: int, min_side: int, overlap: int) -> int:
    """:data:`WIDTH_MULTIPLE` for tile widths of at most ``cap``, or ``multiple`` where rounding ``cap`` down to it
    would leave a tile narrower than ``min_side`` or the overlap (a tiny budget), or where it is no multiple of
    ``multiple``."""
    aligned = cap - cap % WIDTH_MULTIPLE
    if WIDTH_MULTIPLE % multiple or aligned < min_side or aligned <= overlap:
        return multiple
    return WIDTH_MULTIPLE


def _tile_count(length: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`tile_starts` places along ``length``."""
    return 1 if tile >= length else -(-(length - tile) // (tile - overlap)) + 1


def _even_tile(length: int, count: int, overlap: int, multiple: int) -> int:
    """The smallest tile, a multiple of ``multiple``, of which ``count`` overlapping by ``overlap`` cover ``length``."""
    side = -(-(length + (count - 1) * overlap) // count)
    return -(-side // multiple) * multiple


def even_tile(length: int, max_tile: int, overlap: int, multiple: int) -> int:
    """The side of the fewest tiles of at most ``max_tile`` (a multiple of ``multiple``) that cover ``length``
    overlapping by ``overlap``, sized evenly; ``length`` itself when one tile covers it. The fixed-tile rule an app
    graph computes in ONNX operators (:mod:`export.app_graph`)."""
    return _even_tile(length, _tile_count(length, max_tile, overlap), overlap, multiple)


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
