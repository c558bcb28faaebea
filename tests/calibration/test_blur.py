"""Synthetic motion blur: kernels are valid PSFs, blur really blurs, everything is seeded."""

import numpy as np
import pytest

from calibration.blur import (
    BlurConfig,
    add_poisson_gaussian_noise,
    apply_blur,
    convolve,
    degrade,
    jpeg_roundtrip,
    linear_to_srgb,
    random_motion_kernel,
    random_trajectory,
    srgb_to_linear,
    synthesize_pair,
    trajectory_extent,
    trajectory_to_kernel,
)


def textured_image(seed: int = 0, size: int = 96) -> np.ndarray:
    """Smooth colour blobs plus sharp edges and fine detail: something blur visibly changes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (3 * xx + c) + 5 * yy * c) for c in (0.0, 0.3, 0.6)], -1)
    img[size // 3: size // 2, :] = 0.9
    img[:, size // 4: size // 4 + 3] = 0.1
    img += 0.1 * rng.random((size, size, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def high_frequency_energy(img: np.ndarray) -> float:
    grey = img.mean(-1)
    return float((np.diff(grey, axis=0) ** 2).mean() + (np.diff(grey, axis=1) ** 2).mean())


def centroid(kernel: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[: kernel.shape[0], : kernel.shape[1]]
    return float((kernel * ys).sum()), float((kernel * xs).sum())


@pytest.mark.parametrize("seed", range(6))
def test_random_kernel_is_a_centred_psf(seed):
    config = BlurConfig()
    kernel = random_motion_kernel(seed, config)
    assert kernel.dtype == np.float32 and kernel.ndim == 2
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.shape[0] <= config.max_kernel_size
    assert kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    c = (kernel.shape[0] - 1) / 2
    cy, cx = centroid(kernel)
    assert cy == pytest.approx(c, abs=1e-3) and cx == pytest.approx(c, abs=1e-3)


def test_kernel_extent_follows_config():
    for seed in range(5):
        kernel = random_motion_kernel(seed, BlurConfig(extent_range=(12.0, 12.0)))
        ys, xs = np.nonzero(kernel > 1e-6)
        extent = max(np.ptp(ys), np.ptp(xs))
        assert 11 <= extent <= 14, extent  # 12 px path, bilinear splatting adds up to 1 px per side


def test_curriculum_caps_kernel_size():
    capped = BlurConfig().with_max_extent(5)
    assert capped.extent_range == (5, 5) and capped.max_kernel_size == 13
    assert all(random_motion_kernel(s, capped).shape[0] <= 13 for s in range(10))
    grown = BlurConfig(extent_range=(3, 9)).with_max_extent(15)
    assert grown.extent_range == (3, 15)


def test_same_seed_same_kernel_different_seed_different_kernel():
    a, b, c = random_motion_kernel(7), random_motion_kernel(7), random_motion_kernel(8)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_trajectory_is_deterministic_with_constant_speed():
    t1 = random_trajectory(np.random.default_rng(3), iterations=500, max_len=40.0, expl=0.005)
    t2 = random_trajectory(np.random.default_rng(3), iterations=500, max_len=40.0, expl=0.005)
    t3 = random_trajectory(np.random.default_rng(4), iterations=500, max_len=40.0, expl=0.005)
    np.testing.assert_array_equal(t1, t2)
    assert not np.allclose(t1, t3)
    assert t1.shape == (500,) and t1[0] == 0
    np.testing.assert_allclose(np.abs(np.diff(t1)), 40.0 / 499, rtol=1e-9)
    assert 0 < trajectory_extent(t1) <= 40.0


def test_straight_trajectory_gives_a_line_kernel():
    traj = np.linspace(0, 10, 1001) + 0j  # horizontal, 10 px
    kernel = trajectory_to_kernel(traj)
    row = kernel.shape[0] // 2
    assert kernel[row].sum() == pytest.approx(1.0, abs=1e-6)  # all mass on the centre row
    assert np.count_nonzero(kernel[row] > 1e-6) in (10, 11, 12)
    with pytest.raises(ValueError):
        trajectory_to_kernel(traj, size=14)  # even
    with pytest.raises(ValueError):
        trajectory_to_kernel(traj, size=7)  # too small for a 10 px path


def test_convolution_not_correlation_and_axes():
    img = textured_image(1)
    kernel = np.zeros((5, 5), np.float32)
    kernel[2, 4] = 1.0  # impulse 2 px right of centre: convolution moves the image 2 px right
    out = convolve(img, kernel)
    np.testing.assert_allclose(out[:, 2:], img[:, :-2], atol=1e-6)


def test_horizontal_blur_leaves_horizontal_stripes_alone():
    stripes = np.zeros((64, 64, 3), np.float32)
    stripes[::4] = 1.0  # constant along x
    kernel = trajectory_to_kernel(np.linspace(0, 8, 801) + 0j)
    np.testing.assert_allclose(apply_blur(stripes, kernel, linear_light=False), stripes, atol=1e-5)
    assert not np.allclose(apply_blur(stripes.transpose(1, 0, 2), kernel, linear_light=False),
                           stripes.transpose(1, 0, 2), atol=1e-2)


def test_identity_kernel_and_srgb_round_trip():
    img = textured_image(2)
    delta = np.ones((1, 1), np.float32)
    np.testing.assert_allclose(apply_blur(img, delta, linear_light=True), img, atol=1e-5)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(img)), img, atol=1e-5)
    assert srgb_to_linear(np.full((1, 1, 3), 0.5, np.float32))[0, 0, 0] == pytest.approx(0.2140, abs=1e-4)


def test_linear_light_blur_differs_from_srgb_blur():
    img = textured_image(3)
    kernel = random_motion_kernel(0)
    lin, srgb = apply_blur(img, kernel, True), apply_blur(img, kernel, False)
    assert lin.shape == img.shape and lin.dtype == np.float32
    # Averaging in linear light brightens edges between dark and bright areas.
    assert lin.mean() > srgb.mean() + 1e-3


@pytest.mark.parametrize("valid", [False, True])
def test_synthesize_pair_shapes_ranges_and_blur(valid):
    sharp = textured_image(4)
    blurred, target, kernel = synthesize_pair(sharp, np.random.default_rng(5), BlurConfig(), valid=valid)
    pad = kernel.shape[0] // 2 if valid else 0
    assert blurred.shape == target.shape == (96 - 2 * pad, 96 - 2 * pad, 3)
    assert blurred.dtype == target.dtype == np.float32
    assert 0 <= blurred.min() and blurred.max() <= 1
    np.testing.assert_array_equal(target, sharp[pad:96 - pad, pad:96 - pad])
    assert np.abs(blurred - target).mean() > 0.01
    assert high_frequency_energy(blurred) < 0.7 * high_frequency_energy(target)


def test_synthesize_pair_is_seeded():
    sharp = textured_image(5)
    a = synthesize_pair(sharp, 11)
    b = synthesize_pair(sharp, np.random.default_rng(11))
    c = synthesize_pair(sharp, 12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_degrade_without_noise_or_jpeg_is_quantised_blur():
    sharp = textured_image(6)
    kernel = random_motion_kernel(1)
    clean = BlurConfig(noise_prob=0.0, jpeg_prob=0.0)
    out = degrade(sharp, kernel, 0, clean)
    np.testing.assert_allclose(out, np.round(apply_blur(sharp, kernel) * 255) / 255, atol=1e-6)
    noisy = degrade(sharp, kernel, 0, BlurConfig(noise_prob=1.0, jpeg_prob=1.0))
    assert np.abs(noisy - out).mean() > 1e-3


def test_poisson_gaussian_noise_statistics():
    flat = np.full((256, 256, 3), 0.25, np.float32)
    shot, read = 2e-3, 1e-2
    noisy = add_poisson_gaussian_noise(flat, 0, shot, read)
    assert noisy.dtype == np.float32
    assert noisy.mean() == pytest.approx(0.25, abs=2e-3)
    assert noisy.var() == pytest.approx(shot * 0.25 + read**2, rel=0.05)
    np.testing.assert_array_equal(noisy, add_poisson_gaussian_noise(flat, 0, shot, read))


def test_jpeg_roundtrip_is_close_but_lossy():
    img = textured_image(7)
    out = jpeg_roundtrip(img, 90)
    assert out.shape == img.shape and out.dtype == np.float32
    err = np.abs(out - img).mean()
    assert 0 < err < 0.03


def test_config_validation():
    with pytest.raises(ValueError):
        BlurConfig(extent_range=(10, 5))
    with pytest.raises(ValueError):
        BlurConfig(jpeg_prob=1.5)
    with pytest.raises(ValueError):
        BlurConfig(jpeg_quality_range=(50, 101))
    with pytest.raises(ValueError):
        BlurConfig(exposure_range=(0.0, 0.5))


def test_linear_kernel_is_a_centred_line_of_the_right_length():
    from calibration.blur import linear_motion_kernel

    horizontal = linear_motion_kernel(10.0, 0.0)
    assert horizontal.sum() == pytest.approx(1.0, abs=1e-6)
    rows = np.nonzero(horizontal.sum(axis=1) > 1e-6)[0]
    cols = np.nonzero(horizontal.sum(axis=0) > 1e-6)[0]
    assert len(rows) == 1 and 10 <= len(cols) <= 12  # one row, ~11 px long (bilinear splat at the ends)
    centre = horizontal.shape[0] // 2
    ys, xs = np.indices(horizontal.shape)
    assert (horizontal * xs).sum() == pytest.approx(centre, abs=1e-4)
    vertical = linear_motion_kernel(10.0, np.pi / 2)
    assert np.allclose(vertical, horizontal.T, atol=1e-6)


def test_blur_kinds_and_their_streams():
    from calibration.blur import DO_NO_HARM_MIXTURE, BlurConfig

    sharp = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    identity = BlurConfig(kind="none", noise_prob=0.0, jpeg_prob=0.0)
    assert random_motion_kernel(0, identity).shape == (1, 1)
    out = degrade(sharp, random_motion_kernel(0, identity), 0, identity)
    assert np.abs(out - sharp).max() <= 0.5 / 255 + 1e-5  # only 8-bit quantisation
    line = random_motion_kernel(3, BlurConfig(kind="linear", extent_range=(9.0, 9.0)))
    assert line.shape[0] >= 9
    # sRGB noise is drawn only when asked: the default stream (and so the held-out set) is unchanged
    kernel = random_motion_kernel(1)
    assert np.array_equal(degrade(sharp, kernel, 4), degrade(sharp, kernel, 4, BlurConfig()))
    noisy = degrade(sharp, kernel, 4, BlurConfig(srgb_noise_range=(0.05, 0.05), noise_prob=0.0))
    assert np.abs(noisy - degrade(sharp, kernel, 4, BlurConfig(noise_prob=0.0))).mean() > 0.02
    picks = [DO_NO_HARM_MIXTURE.pick(np.random.default_rng(s)).kind for s in range(400)]
    assert {"trajectory", "linear", "none"} == set(picks)
    assert 0.08 < picks.count("none") / len(picks) < 0.22  # weight 0.15
    from calibration.blur import DO_NO_HARM_SHAKE_MIXTURE, RECIPES

    assert RECIPES["do-no-harm-shake"] is DO_NO_HARM_SHAKE_MIXTURE
    assert sum(w for w, _ in DO_NO_HARM_SHAKE_MIXTURE.components) == pytest.approx(1.0)
    shake = [DO_NO_HARM_SHAKE_MIXTURE.pick(np.random.default_rng(s)).kind for s in range(400)]
    assert shake.count("trajectory") / len(shake) > picks.count("trajectory") / len(picks) + 0.1  # 0.65 vs 0.50
    assert 0.08 < shake.count("none") / len(shake) < 0.22  # sharp inputs keep their 0.15
    with pytest.raises(ValueError, match="kind"):
        BlurConfig(kind="zoom")
