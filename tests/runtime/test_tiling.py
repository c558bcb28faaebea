"""Tiling: covers every pixel, matches an untiled run away from borders, and leaves no visible seams."""

import numpy as np
import pytest

from runtime import Deblurrer
from runtime.tiling import WIDTH_MULTIPLE, _ramp, budget_tile, run_tiled, tile_starts


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


@pytest.mark.parametrize("height, width", [(3000, 4000), (4000, 3000), (1080, 1920), (2160, 3840), (3024, 4032),
                                           (6000, 8000)])
def test_budget_tiles_are_even_so_little_is_computed_twice(height, width):
    """Under the default CPU budget (the default network: 599,186 pixels, size multiple 2; also with a multiple of 8)
    the tiles of phone photos, a 1080p and a 4K frame compute at most 1.10x the image's pixels (the square budget
    tile computed 1.47x a 3024x4032 photo and 1.73x a 1080p frame: its last row and column shifted far inwards)."""
    budget, overlap = 599_186, 32
    for multiple in (2, 8):
        th, tw = budget_tile(height, width, budget, multiple, 2 * overlap + multiple, overlap)
        assert th * tw <= budget and th % multiple == 0 and tw % multiple == 0
        assert tw % WIDTH_MULTIPLE == 0  # OpenVINO's AMX kernels: 1.19-1.47x slower per pixel at other widths
        assert max(th, tw) <= 2 * min(th, tw)
        computed = len(tile_starts(height, th, overlap)) * len(tile_starts(width, tw, overlap)) * th * tw
        assert computed <= 1.10 * height * width


def test_budget_tiles_respect_budget_multiple_and_minimum_on_random_shapes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        height, width = (int(v) * 8 for v in rng.integers(1, 700, size=2))
        overlap = int(rng.choice([0, 8, 32]))
        min_side = 2 * overlap + 8
        budget = int(rng.integers(min_side**2, 2_000_000))
        th, tw = budget_tile(height, width, budget, 8, min_side, overlap)
        assert th <= height and tw <= width and th * tw <= budget
        assert th % 8 == 0 and tw % 8 == 0 and th >= min(min_side, height) and tw >= min(min_side, width)
    assert budget_tile(100, 100, 64, 8, 24, 8) == (24, 24)  # below one minimum tile: the minimum tile


def test_tile_widths_are_aligned_where_the_budget_allows_and_even_where_it_does_not():
    # a 12 MP photo under the default CPU budget: the same 24 tiles as with widths of any even size (774x694), 704
    # wide now, still within the budget
    assert budget_tile(3000, 4000, 599_186, 2, 66, 32) == (774, 704)
    # a budget so small that a width rounded down to 16 would be narrower than the minimum tile: even widths
    th, tw = budget_tile(400, 400, 24 * 26, 2, 24, 8)
    assert tw % WIDTH_MULTIPLE and tw % 2 == 0 and th * tw <= 24 * 26 and min(th, tw) >= 24


def test_budget_tiles_stay_within_the_artifacts_largest_input_and_stay_even():
    """An artifact's largest input caps the tile; tiles are still planned for the whole image (a 6000x8000 photo on
    a model exported up to 4096x4096), and with no budget the cap alone sets them."""
    for budget in (599_186, 10**12):
        th, tw = budget_tile(6000, 8000, budget, 2, 66, 32, (4096, 4096))
        assert th <= 4096 and tw <= 4096 and th * tw <= budget
        computed = len(tile_starts(6000, th, 32)) * len(tile_starts(8000, tw, 32)) * th * tw
        assert computed <= 1.14 * 6000 * 8000
    assert budget_tile(300, 400, 10**12, 2, 66, 32, (4096, 4096)) == (300, 400)
    assert budget_tile(300, 5000, 10**12, 2, 66, 32, (4096, 4096))[1] <= 4096
