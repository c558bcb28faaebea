"""Synthetic camera-shake blur: random trajectories, their PSFs, and a realistic degradation pipeline.

Why this exists: no deblurring data set (GoPro, RealBlur...) can be downloaded here, so training and
evaluation pairs are synthesised from sharp photographs, as the deblurring literature does without pairs:

* **Trajectories** follow Boracchi & Foi, "Modeling the performance of image restoration from motion blur"
  (IEEE TIP 2012), as re-implemented by DeblurGAN (Kupyn et al. 2018, ``RandomTrajectory``): a particle with
  constant speed whose velocity gets Gaussian jitter, a centripetal pull back to the origin and rare abrupt
  "big shakes". :func:`random_trajectory` is a seeded port of that generator.
* **PSFs** rasterise a trajectory with sub-pixel bilinear splatting (:func:`trajectory_to_kernel`). Kernels
  are centred on their centre of mass so the blurred image is not shifted against the sharp target (a pixel
  loss would otherwise learn to blur). :func:`random_motion_kernel` rescales trajectories to a drawn *extent*
  (longest side of the trajectory's bounding box, in pixels); ``BlurConfig.extent_range`` is the knob a
  curriculum turns.
* **Degradation** (:func:`degrade`) blurs in linear light (a sensor integrates photons, not sRGB code values),
  adds Poisson-Gaussian sensor noise (shot + read noise, Foi et al. 2008) in linear light, converts back to
  sRGB, quantises to 8 bits and optionally re-compresses as JPEG, like a camera pipeline would.

Everything is deterministic given a :class:`numpy.random.Generator` (or an integer seed). Images are HxWx3 RGB
float32 in [0, 1].
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

#: DeblurGAN's choices for the "exploration" parameter of the trajectory (larger = more erratic).
DEBLURGAN_EXPL = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003)

RngLike = np.random.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (returned as is), an integer seed, or None (seed 0, never OS entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


# --------------------------------------------------------------------------------------------------
# Trajectories and kernels
# --------------------------------------------------------------------------------------------------


def random_trajectory(rng: RngLike, iterations: int = 2000, max_len: float = 60.0,
                      expl: float = 0.005) -> np.ndarray:
    """A random camera-shake trajectory (Boracchi & Foi 2012; DeblurGAN's ``RandomTrajectory.generate``).

    Args:
        rng: random source.
        iterations: number of positions (time samples) along the trajectory.
        max_len: total path length in pixels (each step has length ``max_len / (iterations - 1)``).
        expl: exploration: scales the velocity jitter, the centripetal pull and the chance of big shakes.

    Returns:
        complex128 array of ``iterations`` positions (x = real, y = imag) starting at 0. DeblurGAN's
        ``canvas`` only placed the path on a fixed grid; :func:`trajectory_to_kernel` sizes kernels to fit.
    """
    if iterations < 2:
        raise ValueError(f"iterations must be >= 2, got {iterations}")
    rng = as_rng(rng)
    centripetal = 0.7 * rng.uniform()
    prob_big_shake = 0.2 * rng.uniform()
    gaussian_shake = 10.0 * rng.uniform()
    init_angle = 2.0 * math.pi * rng.uniform()
    step = max_len / (iterations - 1)
    # Drawn up front (vectorised) so the loop below is plain Python complex arithmetic: ~1 ms for 2000 steps.
    big = (rng.uniform(size=iterations - 1) < prob_big_shake * expl).tolist()
    big_angle = (rng.uniform(size=iterations - 1) - 0.5).tolist()
    jitter = rng.standard_normal((iterations - 1, 2))
    jitter_c = (jitter[:, 0] + 1j * jitter[:, 1]).tolist()

    v0 = complex(math.cos(init_angle), math.sin(init_angle))
    v = v0 * expl if expl > 0 else v0 * step
    x = 0j
    out = [0j]
    for t in range(iterations - 1):
        next_direction = 2.0 * v * cmath.exp(1j * (math.pi + big_angle[t])) if big[t] else 0j
        v += next_direction + expl * (gaussian_shake * jitter_c[t] - centripetal * x) * step
        v = v / abs(v) * step
        x = x + v
        out.append(x)
    return np.asarray(out, dtype=np.complex128)


def trajectory_extent(traj: np.ndarray) -> float:
    """Longest side, in pixels, of the trajectory's bounding box (how far the blur smears a point)."""
    return float(max(np.ptp(traj.real), np.ptp(traj.imag)))


def trajectory_to_kernel(traj: np.ndarray, size: int | None = None) -> np.ndarray:
    """Rasterise a trajectory into a PSF by bilinear splatting of every time sample; sums to 1.

    The trajectory is translated so that its mean lands on the kernel's centre pixel; bilinear splatting keeps
    the mean exactly, so the PSF's centre of mass is the centre and blurring does not shift the image.

    Args:
        traj: complex positions (x = real, y = imag), uniformly spaced in time.
        size: odd kernel side; None picks the smallest odd size that holds the trajectory.

    Returns:
        float32 ``size x size`` kernel, non-negative, summing to 1.
    """
    traj = np.asarray(traj, dtype=np.complex128).ravel()
    if traj.size == 0:
        raise ValueError("empty trajectory")
    pts = traj - traj.mean()
    radius = float(max(np.abs(pts.real).max(), np.abs(pts.imag).max()))
    needed = 2 * math.ceil(radius) + 3
    if size is None:
        size = needed
    elif size % 2 == 0 or size < needed:
        raise ValueError(f"kernel size must be odd and >= {needed} for this trajectory, got {size}")
    centre = (size - 1) / 2.0
    xs, ys = pts.real + centre, pts.imag + centre
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros(size * size, np.float64)
    splats = ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy))
    for dy, dx, w in splats:
        kernel += np.bincount((y0 + dy) * size + (x0 + dx), weights=w, minlength=size * size)
    kernel = kernel.reshape(size, size)
    # Trim all-zero borders symmetrically (keeps the centre pixel the centre).
    while kernel.shape[0] > 1 and not (kernel[0].any() or kernel[-1].any() or kernel[:, 0].any()
                                       or kernel[:, -1].any()):
        kernel = kernel[1:-1, 1:-1]
    return (kernel / kernel.sum()).astype(np.float32)


#: Blur families :class:`BlurConfig` can draw (see its ``kind``).
BLUR_KINDS = ("trajectory", "linear", "none")


@dataclass(frozen=True)
class BlurConfig:
    """How :func:`synthesize_pair` degrades a sharp image. Defaults: GoPro-like camera shake.

    Attributes:
        extent_range: blur extent in pixels (longest side of the trajectory's bounding box), log-uniform
            (mild blur is more common than severe blur, as in GoPro; the median of 7-31 is 15; bounds below
            0.5 px count as 0.5). The curriculum knob: see :meth:`with_max_extent`. Kernels are at most
            ``2 * ceil(max) + 3`` pixels wide.
        expl_choices: trajectory exploration values, one drawn per kernel (DeblurGAN's set).
        exposure_range: fraction of the simulated trajectory the shutter is open for (Boracchi & Foi's T),
            log-uniform. Short exposures give the smooth, gently curved paths of real hand shake; the whole
            2000-step trajectory is loopy (DeblurGAN's "T = 1" kernels), which real photos rarely show.
        iterations: time samples per trajectory.
        linear_light: blur (and add noise) in linear light instead of on sRGB code values.
        noise_prob: probability that a pair gets sensor noise.
        shot_noise_range: Poisson gain ``a`` in linear [0, 1] units (variance ``a * signal``), log-uniform.
        read_noise_range: Gaussian read-noise sigma in linear [0, 1] units, log-uniform.
        quantize: round the blurred image to 8 bits (what a camera or a PNG would give the network).
        jpeg_prob: probability of a JPEG round trip after quantisation.
        jpeg_quality_range: inclusive JPEG quality range, drawn uniformly.
        kind: the blur family: ``"trajectory"`` (camera shake, above), ``"linear"`` (straight motion at a
            uniform random angle, length log-uniform in ``extent_range``) or ``"none"`` (a sharp input: the
            identity kernel; the model must pass it through unchanged).
        srgb_noise_range: when set, Gaussian noise of a log-uniform sigma in this range is added to the sRGB
            values after the camera pipeline (what image editors' "add noise" does), before quantisation.
    """

    extent_range: tuple[float, float] = (7.0, 31.0)
    expl_choices: tuple[float, ...] = DEBLURGAN_EXPL
    exposure_range: tuple[float, float] = (0.05, 0.5)
    iterations: int = 2000
    linear_light: bool = True
    noise_prob: float = 0.8
    shot_noise_range: tuple[float, float] = (1e-4, 2e-3)
    read_noise_range: tuple[float, float] = (2e-4, 2e-3)
    quantize: bool = True
    jpeg_prob: float = 0.3
    jpeg_quality_range: tuple[int, int] = (70, 95)
    kind: str = "trajectory"
    srgb_noise_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in BLUR_KINDS:
            raise ValueError(f"kind must be one of {BLUR_KINDS}, got {self.kind!r}")
        if self.srgb_noise_range is not None and not 0 < self.srgb_noise_range[0] <= self.srgb_noise_range[1]:
            raise ValueError(f"srgb_noise_range must satisfy 0 < min <= max, got {self.srgb_noise_range}")
        lo, hi = self.extent_range
        if not 0 <= lo <= hi:
            raise ValueError(f"extent_range must satisfy 0 <= min <= max, got {self.extent_range}")
        if not 0 < self.exposure_range[0] <= self.exposure_range[1] <= 1:
            raise ValueError(f"exposure_range must lie in (0, 1], got {self.exposure_range}")
        for name in ("noise_prob", "jpeg_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        for name in ("shot_noise_range", "read_noise_range"):
            a, b = getattr(self, name)
            if not 0 < a <= b:
                raise ValueError(f"{name} must satisfy 0 < min <= max, got {(a, b)}")
        q0, q1 = self.jpeg_quality_range
        if not 1 <= q0 <= q1 <= 100:
            raise ValueError(f"jpeg_quality_range must lie in [1, 100], got {self.jpeg_quality_range}")
        if not self.expl_choices:
            raise ValueError("expl_choices is empty")

    @property
    def max_kernel_size(self) -> int:
        """Upper bound on the side of any kernel this config draws (for margins around crops)."""
        return 1 if self.kind == "none" else 2 * math.ceil(self.extent_range[1]) + 3

    def with_max_extent(self, max_extent: float) -> BlurConfig:
        """This config with blur extents capped at ``max_extent`` px (curriculum: start small, grow)."""
        return replace(self, extent_range=(min(self.extent_range[0], max_extent), max_extent))


DEFAULT_CONFIG = BlurConfig()


@dataclass(frozen=True)
class BlurMixture:
    """A training distribution over blur families: each crop draws one :class:`BlurConfig` by weight."""

    components: tuple[tuple[float, BlurConfig], ...]

    def __post_init__(self) -> None:
        if not self.components or any(w < 0 for w, _ in self.components) \
                or sum(w for w, _ in self.components) <= 0:
            raise ValueError("a BlurMixture needs components with non-negative weights and a positive sum")

    def pick(self, rng: RngLike) -> BlurConfig:
        """One component's config, drawn by weight."""
        weights = np.array([w for w, _ in self.components], np.float64)
        index = int(as_rng(rng).choice(len(weights), p=weights / weights.sum()))
        return self.components[index][1]

    @property
    def max_kernel_size(self) -> int:
        return max(config.max_kernel_size for _, config in self.components)


#: Sensor noise from clean to ISO-3200-like (shot-noise gain and read-noise sigma in linear [0, 1] units).
WIDE_NOISE = {"noise_prob": 0.8, "shot_noise_range": (1e-4, 6e-3), "read_noise_range": (2e-4, 4e-3)}

#: What users meet (issue 18, "do no harm"): camera shake (the original recipe, 35%), camera shake in sRGB
#: and short shake (10%), straight linear motion of 3-31 px in linear light and in sRGB (35%), nearly sharp
#: inputs (5%) and sharp inputs the model must return unchanged (15%), with noise from clean to ISO 3200 and
#: JPEG. Held-out evaluation covers each family separately (``training.evaluate``).
DO_NO_HARM_MIXTURE = BlurMixture((
    (0.35, DEFAULT_CONFIG),
    (0.10, BlurConfig(extent_range=(3.0, 31.0), linear_light=False, **WIDE_NOISE)),
    (0.15, BlurConfig(kind="linear", extent_range=(3.0, 31.0), **WIDE_NOISE)),
    (0.15, BlurConfig(kind="linear", extent_range=(3.0, 31.0), linear_light=False, noise_prob=0.4,
                      srgb_noise_range=(0.002, 0.02))),
    (0.05, BlurConfig(extent_range=(0.5, 2.5), **WIDE_NOISE)),
    (0.15, BlurConfig(kind="none", noise_prob=0.0, jpeg_prob=0.2, jpeg_quality_range=(85, 95))),
))

#: The same families with camera shake weighted up (55% instead of 35%, from linear motion and sRGB shake), for
#: fine-tuning a do-no-harm model whose shake gain fell below the shake-only model's (issue 18).
DO_NO_HARM_SHAKE_MIXTURE = BlurMixture(tuple(zip(
    (0.55, 0.05, 0.10, 0.10, 0.05, 0.15), (config for _, config in DO_NO_HARM_MIXTURE.components), strict=True)))

#: Training recipes by name (``TrainConfig.recipe``): what ``make_training_batch`` draws blur from.
RECIPES: dict[str, BlurConfig | BlurMixture] = {"trajectory": DEFAULT_CONFIG, "do-no-harm": DO_NO_HARM_MIXTURE,
                                                "do-no-harm-shake": DO_NO_HARM_SHAKE_MIXTURE}


def linear_motion_kernel(length: float, angle: float) -> np.ndarray:
    """A straight-line motion PSF: ``length`` pixels end to end at ``angle`` radians, sub-pixel rasterised.

    Uniform speed along the segment (a box filter along the motion), as a camera or object moving steadily
    during the exposure gives; centred like :func:`trajectory_to_kernel`.
    """
    if not length >= 0:
        raise ValueError(f"length must be >= 0, got {length}")
    samples = max(2, int(math.ceil(4 * length)) + 1)
    traj = np.linspace(0.0, length, samples) * cmath.exp(1j * angle)
    return trajectory_to_kernel(traj)


def random_motion_kernel(rng: RngLike, config: BlurConfig = DEFAULT_CONFIG,
                         extent_range: tuple[float, float] | None = None) -> np.ndarray:
    """A random PSF of ``config.kind``; for camera shake: Boracchi-Foi trajectory, exposure cut, rescaled.

    Args:
        rng: random source.
        config: trajectory parameters (``expl_choices``, ``exposure_range``, ``iterations``,
            ``extent_range``).
        extent_range: overrides ``config.extent_range``.

    Returns:
        float32 odd-sized square kernel, non-negative, summing to 1, centre of mass at the centre.
    """
    rng = as_rng(rng)
    lo, hi = config.extent_range if extent_range is None else extent_range
    if config.kind == "none":
        return np.ones((1, 1), np.float32)
    if config.kind == "linear":
        angle = rng.uniform(0.0, math.pi)
        return linear_motion_kernel(_log_uniform(rng, (max(lo, 0.5), max(hi, 0.5))), angle)
    expl = float(rng.choice(np.asarray(config.expl_choices)))
    exposure = _log_uniform(rng, config.exposure_range)
    target = _log_uniform(rng, (max(lo, 0.5), max(hi, 0.5)))
    traj = random_trajectory(rng, iterations=config.iterations, max_len=60.0, expl=expl)
    traj = traj[: max(2, int(round(exposure * len(traj))))]
    extent = trajectory_extent(traj)
    if extent > 1e-9:
        traj = traj * (target / extent)
    return trajectory_to_kernel(traj)


# --------------------------------------------------------------------------------------------------
# Image operations
# --------------------------------------------------------------------------------------------------


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] values -> linear light (IEC 61966-2-1), float32."""
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    return np.where(img <= 0.04045, img / 12.92, np.power((img + 0.055) / 1.055, 2.4)).astype(np.float32)


def linear_to_srgb(img: np.ndarray) -> np.ndarray:
    """Linear light [0, 1] -> sRGB-encoded values, float32 (input is clipped to [0, 1] first)."""
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    return np.where(img <= 0.0031308, img * 12.92, 1.055 * np.power(img, 1 / 2.4) - 0.055).astype(np.float32)


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """True convolution (not correlation) of every channel with ``kernel``, reflect-101 borders, float32."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    out = cv2.filter2D(np.ascontiguousarray(img, np.float32), -1, flipped, borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(img.shape)


def apply_blur(sharp: np.ndarray, kernel: np.ndarray, linear_light: bool = True) -> np.ndarray:
    """Blur an HxWx3 float32 [0, 1] image with ``kernel``, in linear light when asked (sRGB->linear->sRGB).

    Borders are reflected; crop ``kernel.shape[0] // 2`` pixels from each side to drop border effects.
    """
    _check_image(sharp)
    if not linear_light:
        return np.clip(convolve(sharp, kernel), 0.0, 1.0)
    return linear_to_srgb(convolve(srgb_to_linear(sharp), kernel))


def add_poisson_gaussian_noise(linear: np.ndarray, rng: RngLike, shot: float, read: float) -> np.ndarray:
    """Sensor noise on a linear-light image: Poisson shot noise of gain ``shot`` plus Gaussian read noise.

    ``shot`` is the signal level of one photo-electron in [0, 1] units (variance ``shot * signal``); ``read``
    is the read-noise sigma. Output is float32, not clipped.
    """
    rng = as_rng(rng)
    signal = np.clip(linear, 0.0, None).astype(np.float64)
    noisy = rng.poisson(signal / shot) * shot if shot > 0 else signal
    noisy = noisy + read * rng.standard_normal(signal.shape)
    return noisy.astype(np.float32)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB float [0, 1] image as JPEG at ``quality`` with OpenCV and decode it again (float32)."""
    bgr = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got {getattr(img, 'shape', type(img))}")


def degrade(sharp: np.ndarray, kernel: np.ndarray, rng: RngLike, config: BlurConfig = DEFAULT_CONFIG,
            crop: int = 0) -> np.ndarray:
    """Blur, crop ``crop`` pixels from every side, add sensor noise, quantise, maybe JPEG: the camera model.

    Pass a sharp region ``kernel.shape[0] // 2`` pixels larger on each side than wanted and ``crop`` = that
    margin to get a blurred image free of border effects. Random draws are made in a fixed order whatever
    the config's probabilities, so e.g. switching JPEG off does not change the noise drawn.
    """
    _check_image(sharp)
    rng = as_rng(rng)
    use_noise = rng.uniform() < config.noise_prob
    shot = _log_uniform(rng, config.shot_noise_range)
    read = _log_uniform(rng, config.read_noise_range)
    use_jpeg = rng.uniform() < config.jpeg_prob
    quality = int(rng.integers(config.jpeg_quality_range[0], config.jpeg_quality_range[1] + 1))
    noise_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))

    img = srgb_to_linear(sharp) if config.linear_light else np.asarray(sharp, np.float32)
    img = convolve(img, kernel)
    if crop:
        img = img[crop:-crop, crop:-crop]
    if use_noise:
        if not config.linear_light:  # noise is physical: apply it in linear light regardless
            img = linear_to_srgb(add_poisson_gaussian_noise(srgb_to_linear(img), noise_rng, shot, read))
        else:
            img = add_poisson_gaussian_noise(img, noise_rng, shot, read)
    img = linear_to_srgb(img) if config.linear_light else np.clip(img, 0.0, 1.0)
    if config.srgb_noise_range is not None:  # drawn only when asked: other configs keep their streams
        sigma = _log_uniform(noise_rng, config.srgb_noise_range)
        img = np.clip(img + sigma * noise_rng.standard_normal(img.shape).astype(np.float32), 0.0, 1.0)
    if config.quantize:
        img = np.round(img * 255.0) / 255.0
    if use_jpeg:
        img = jpeg_roundtrip(img, quality)
    return np.ascontiguousarray(img, dtype=np.float32)


def synthesize_pair(sharp: np.ndarray, rng: RngLike, config: BlurConfig = DEFAULT_CONFIG,
                    valid: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make a (blurred, sharp, kernel) training pair from one sharp HxWx3 float32 [0, 1] RGB image.

    Args:
        sharp: the sharp image.
        rng: random source (kernel, noise and JPEG draws).
        config: degradation parameters.
        valid: drop ``kernel.shape[0] // 2`` pixels at every side of both images, where the blur would have
            needed pixels outside the image (otherwise borders are reflected and shapes are kept).

    Returns:
        blurred and sharp float32 images of equal shape, and the float32 kernel.
    """
    _check_image(sharp)
    rng = as_rng(rng)
    sharp = np.asarray(sharp, np.float32)
    kernel = random_motion_kernel(rng, config)
    pad = kernel.shape[0] // 2 if valid else 0
    if valid and min(sharp.shape[:2]) <= 2 * pad:
        raise ValueError(f"image {sharp.shape[:2]} too small for a valid blur with a {kernel.shape[0]} px "
                         "kernel")
    blurred = degrade(sharp, kernel, rng, config, crop=pad)
    if pad:
        sharp = sharp[pad:-pad, pad:-pad]
    return blurred, np.ascontiguousarray(sharp), kernel
