"""Tiling: covers every pixel, matches an untiled run away from borders, and leaves no visible seams."""

import numpy as np
import pytest

from runtime import Deblurrer
from runtime.tiling import _ramp, run_tiled, tile_starts


def test_tile_starts_cover_and_overlap():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 128 - 32 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(300, 32, 32)


def test_ramps_sum_to_one_in_overlaps():
    a = _ramp(64, 16, True, False)
    b = _ramp(64, 16, False, True)
    np.testing.assert_allclose(a[-16:] + b[:16], 1.0, atol=1e-6)


def test_identity_forward_is_reproduced_exactly():
    x = np.random.default_rng(0).random((2, 3, 90, 130), dtype=np.float32)
    np.testing.assert_allclose(run_tiled(x, lambda t: t, (32, 48), 8), x, atol=1e-6)


def test_tiled_matches_untiled_and_has_no_seams(tiny_weights):
    from export.parity import photo_batch

    image = ((photo_batch(1, 256, 384, seed=2)[0].transpose(1, 2, 0) + 0.5) * 255).round().astype(np.uint8)
    with Deblurrer(tiny_weights) as whole, Deblurrer(tiny_weights, tile=128, tile_overlap=32) as tiled:
        a = whole(image).astype(np.float64)
        b = tiled(image).astype(np.float64)
    inner = (slice(16, -16), slice(16, -16))
    mse = np.mean((a[inner] - b[inner]) ** 2)
    psnr = 10 * np.log10(255 ** 2 / max(mse, 1e-12))
    assert psnr >= 35, psnr
    # Seams: the jump between neighbouring columns at tile boundaries is no larger than elsewhere.
    starts = tile_starts(384, 128, 32)
    boundaries = sorted({s + 128 - 1 for s in starts[:-1]} | {s for s in starts[1:]})
    col_jump = np.abs(np.diff(b, axis=1)).mean(axis=(0, 2))
    base = np.median(col_jump)
    assert max(col_jump[c] for c in boundaries if c < len(col_jump)) < 2.0 * base + 1.0
