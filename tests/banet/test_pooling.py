"""The MatMul strip pooling equals PyTorch's AdaptiveAvgPool2d + nearest interpolate on many sizes."""

import pytest
import torch
import torch.nn.functional as F

from banet.pooling import (
    resize_height_nearest,
    resize_width_nearest,
    strip_pool_height,
    strip_pool_width,
)

# Shorter than the bins (1..6), odd, primes, non-multiples of 3/5/7, multiples, and the 720p/1080p feature
# lengths (360, 640, 540, 960) plus lengths where float32 nearest rounding differs from exact floor (123, 141).
LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 16, 17, 19, 23, 29, 31, 35, 36, 49, 64, 97, 105, 123, 141,
           183, 249, 360, 491, 540, 640, 960]
BINS = [1, 3, 5, 7]


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("length", LENGTHS)
def test_pool_matches_adaptive_avg_pool(length: int, bins: int) -> None:
    gen = torch.Generator().manual_seed(length * 10 + bins)
    x = torch.randn(2, 3, 5, length, generator=gen)
    torch.testing.assert_close(strip_pool_width(x, bins), F.adaptive_avg_pool2d(x, (5, bins)), atol=1e-6, rtol=0)
    xt = x.transpose(2, 3).contiguous()
    torch.testing.assert_close(strip_pool_height(xt, bins), F.adaptive_avg_pool2d(xt, (bins, 5)), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("length", LENGTHS)
def test_resize_matches_nearest_interpolate(length: int, bins: int) -> None:
    gen = torch.Generator().manual_seed(length * 10 + bins + 1)
    y = torch.randn(2, 3, 4, bins, generator=gen)
    torch.testing.assert_close(resize_width_nearest(y, length), F.interpolate(y, (4, length)), atol=1e-6, rtol=0)
    yt = y.transpose(2, 3).contiguous()
    torch.testing.assert_close(resize_height_nearest(yt, length), F.interpolate(yt, (length, 4)), atol=1e-6,
                               rtol=0)


def test_resize_matches_on_every_length_up_to_1100() -> None:
    """Exhaustive: every output length a 2160-pixel input can produce, for each bin count."""
    for bins in BINS:
        y = torch.arange(bins, dtype=torch.float32).reshape(1, 1, 1, bins)
        for length in range(1, 1100):
            expected = F.interpolate(y, (1, length))
            assert torch.equal(resize_width_nearest(y, length), expected), (bins, length)


def test_pool_is_exact_in_float64_on_every_length_up_to_600() -> None:
    for bins in (3, 5, 7):
        for length in range(1, 600):
            x = torch.randn(1, 1, 1, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
            err = (strip_pool_width(x, bins) - F.adaptive_avg_pool2d(x, (1, bins))).abs().max().item()
            assert err <= 1e-12, (bins, length, err)


def test_half_precision_keeps_dtype() -> None:
    x = torch.randn(1, 2, 9, 13).half()
    assert strip_pool_width(x, 5).dtype == torch.float16
    assert resize_height_nearest(strip_pool_height(x, 7), 9).dtype == torch.float16
