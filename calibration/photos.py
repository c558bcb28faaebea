"""Real photographs for synthetic deblurring pairs: the fixed held-out split (evaluation,
INT8 calibration); the training split is :mod:`training.photos`.

No deblurring data set can be downloaded here, so sharp images come from photographs that ship with packages:

**Held-out split** (evaluation and INT8 calibration, never training): the natural photographs bundled in
scikit-image's ``skimage/data`` folder, read from disk (no network), so the split is identical on any machine
after ``pip install scikit-image``. See :data:`HELDOUT_PHOTOS`. ``motorcycle_right`` is the stereo twin of
``motorcycle_left``: it is held out too, and used for calibration only. Left out entirely: images that are not
natural photographs (``retina``, ``cell``, ``ihc``, ``horse``, ``phantom``, ``logo``, chessboards), scans too
small for a 256 px crop (``page``, ``text``) and ``clock_motion``, which is already motion-blurred (the
evaluation uses it as a real-blur demo).

Images are RGB. :func:`to_bgr_uint8` converts to the network's OpenCV BGR convention where needed.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.blur import DEFAULT_CONFIG, BlurConfig, degrade, random_motion_kernel

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Held-out split: scikit-image's bundled photographs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldoutPhoto:
    """A held-out photograph in ``skimage/data`` and how many non-overlapping evaluation crops it gives."""

    name: str
    filename: str
    eval_crops: int


#: The held-out photographs. Order matters: evaluation crops are interleaved in this order (first crop of
#: every photo, then second crops...), so any prefix of :func:`heldout_pairs` covers as many photos as it can.
HELDOUT_PHOTOS: tuple[HeldoutPhoto, ...] = (
    HeldoutPhoto("astronaut", "astronaut.png", 4),
    HeldoutPhoto("coffee", "coffee.png", 2),
    HeldoutPhoto("chelsea", "chelsea.png", 1),
    HeldoutPhoto("rocket", "rocket.jpg", 2),
    HeldoutPhoto("motorcycle_left", "motorcycle_left.png", 2),
    HeldoutPhoto("camera", "camera.png", 4),
    HeldoutPhoto("hubble_deep_field", "hubble_deep_field.jpg", 2),
    HeldoutPhoto("coins", "coins.png", 1),
    HeldoutPhoto("moon", "moon.png", 2),
    HeldoutPhoto("brick", "brick.png", 2),
    HeldoutPhoto("grass", "grass.png", 2),
    HeldoutPhoto("gravel", "gravel.png", 2),
    HeldoutPhoto("motorcycle_right", "motorcycle_right.png", 0),  # stereo twin: calibration only
)

#: Side of the square evaluation crops.
EVAL_CROP = 256


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


def heldout_photo_files() -> dict[str, Path]:
    """Name -> path of every held-out photograph (all exist after ``pip install scikit-image``)."""
    root = _skimage_data_dir()
    return {p.name: root / p.filename for p in HELDOUT_PHOTOS}


@functools.cache
def load_heldout_photo(name: str) -> np.ndarray:
    """A held-out photograph as read-only HxWx3 float32 RGB in [0, 1] (grey is replicated to 3 channels)."""
    from skimage.io import imread

    path = heldout_photo_files()[name]
    img = imread(path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit pixels, got {img.dtype}")
    out = img.astype(np.float32) / 255.0
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class CropSpec:
    """A square crop of a held-out photo: ``photo[y:y+size, x:x+size]``, with a unique name."""

    name: str
    photo: str
    y: int
    x: int
    size: int


def _grid_cells(height: int, width: int, size: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` non-overlapping cells (row, col, y, x) of a centred grid of size x size tiles, spread out."""
    rows, cols = height // size, width // size
    if rows * cols == 0 or count <= 0:
        return []
    y0, x0 = (height - rows * size) // 2, (width - cols * size) // 2
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    picks = sorted({int(round(i)) for i in np.linspace(0, len(cells) - 1, min(count, len(cells)))})
    return [(cells[i][0], cells[i][1], y0 + cells[i][0] * size, x0 + cells[i][1] * size) for i in picks]


def heldout_crop_specs(size: int = EVAL_CROP) -> list[CropSpec]:
    """Where the evaluation crops are, interleaved across photos (see :data:`HELDOUT_PHOTOS`)."""
    per_photo: list[list[CropSpec]] = []
    for p in HELDOUT_PHOTOS:
        h, w = load_heldout_photo(p.name).shape[:2]
        cells = _grid_cells(h, w, size, p.eval_crops)
        per_photo.append([CropSpec(f"{p.name}_r{r}c{c}", p.name, y, x, size) for r, c, y, x in cells])
    longest = max((len(c) for c in per_photo), default=0)
    return [crops[i] for i in range(longest) for crops in per_photo if i < len(crops)]


def _crop(spec: CropSpec) -> np.ndarray:
    photo = load_heldout_photo(spec.photo)
    return np.ascontiguousarray(photo[spec.y:spec.y + spec.size, spec.x:spec.x + spec.size])


def heldout_crops(size: int = EVAL_CROP) -> list[tuple[str, np.ndarray]]:
    """The fixed evaluation crops: (name, HxWx3 float32 RGB [0, 1]); 26 crops of 256 px by default."""
    return [(s.name, _crop(s)) for s in heldout_crop_specs(size)]


def calibration_crop_specs(count: int = 32, size: int = EVAL_CROP, seed: int = 0) -> list[CropSpec]:
    """Random (seeded) crop positions for INT8 calibration, cycling over all held-out photos.

    They may overlap evaluation crops (same held-out photos) but never touch training photos.
    """
    rng = np.random.default_rng([seed, 0xCA1])
    photos = [p.name for p in HELDOUT_PHOTOS]
    specs = []
    for i in range(count):
        name = photos[i % len(photos)]
        h, w = load_heldout_photo(name).shape[:2]
        if min(h, w) < size:
            raise ValueError(f"calibration crop size {size} exceeds held-out photo {name} ({h}x{w})")
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        specs.append(CropSpec(f"cal{i:03d}_{name}_y{y}x{x}", name, y, x, size))
    return specs


def calibration_crops(count: int = 32, size: int = EVAL_CROP, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Sharp calibration crops (name, HxWx3 float32 RGB [0, 1]) from the held-out photos."""
    return [(s.name, _crop(s)) for s in calibration_crop_specs(count, size, seed)]


def item_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on (seed, name): stable across runs, orderings and Python hash salts."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def blurred_crop(photo: np.ndarray, y: int, x: int, size: int, rng: np.random.Generator,
                 config: BlurConfig) -> np.ndarray:
    """Blur ``photo[y:y+size, x:x+size]`` using the real photo content around it as margin (reflected only
    beyond the photo), drawing kernel, noise and JPEG from ``rng``; shared by evaluation, ``--train-gap`` and
    benchmarks so every split is degraded the same way."""
    kernel = random_motion_kernel(rng, config)
    pad = kernel.shape[0] // 2
    padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    region = padded[y:y + size + 2 * pad, x:x + size + 2 * pad]
    return degrade(region, kernel, rng, config, crop=pad)


def _blurred_crop(spec: CropSpec, rng: np.random.Generator, config: BlurConfig) -> np.ndarray:
    return blurred_crop(load_heldout_photo(spec.photo), spec.y, spec.x, spec.size, rng, config)


Pair = tuple[str, np.ndarray, np.ndarray]


def _pairs(specs: Sequence[CropSpec], seed: int, config: BlurConfig) -> list[Pair]:
    return [(s.name, _blurred_crop(s, item_rng(seed, s.name), config), _crop(s)) for s in specs]


def heldout_pairs(seed: int = 0, size: int = EVAL_CROP, config: BlurConfig | None = None) -> list[Pair]:
    """The evaluation set: (name, blurred, sharp) HxWx3 float32 RGB [0, 1], identical on every run.

    Each crop's blur, noise and JPEG draws depend only on ``seed`` and the crop's name, so taking a prefix or
    reordering does not change any item. ``config`` defaults to :data:`calibration.blur.DEFAULT_CONFIG`.
    """
    return _pairs(heldout_crop_specs(size), seed, config or DEFAULT_CONFIG)


#: Held-out blur families (issue 18), each on the same 26 crops: name -> (degradation, seed). ``trajectory`` is
#: the original evaluation set (unchanged); the linear families are straight motion of 7-15 px at a random angle,
#: blurred in sRGB with mild Gaussian noise, or in linear light with the camera model's mild sensor noise.
EVAL_FAMILIES: dict[str, tuple[BlurConfig, int]] = {
    "trajectory": (DEFAULT_CONFIG, 0),
    "linear_srgb": (BlurConfig(kind="linear", extent_range=(7.0, 15.0), linear_light=False, noise_prob=0.0,
                               jpeg_prob=0.0, srgb_noise_range=(0.002, 0.01)), 1),
    "linear_light": (BlurConfig(kind="linear", extent_range=(7.0, 15.0), jpeg_prob=0.0), 2),
}


def heldout_family_pairs(family: str, size: int = EVAL_CROP) -> list[Pair]:
    """The held-out crops degraded by one of :data:`EVAL_FAMILIES` (``trajectory`` = :func:`heldout_pairs`)."""
    if family not in EVAL_FAMILIES:
        raise ValueError(f"unknown blur family {family!r}; choose one of {sorted(EVAL_FAMILIES)}")
    config, seed = EVAL_FAMILIES[family]
    return heldout_pairs(seed, size, config)


def calibration_pairs(count: int = 32, size: int = EVAL_CROP, seed: int = 0,
                      config: BlurConfig | None = None) -> list[Pair]:
    """INT8 calibration set: (name, blurred, sharp) from held-out photos; feed the *blurred* images."""
    return _pairs(calibration_crop_specs(count, size, seed), seed, config or DEFAULT_CONFIG)


def to_bgr_uint8(img: np.ndarray) -> np.ndarray:
    """HxWx3 (or NxHxWx3) RGB float [0, 1] -> BGR uint8, the OpenCV / network channel convention."""
    img = np.asarray(img)
    if img.shape[-1] != 3:
        raise ValueError(f"expected 3 channels last, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img[..., ::-1])


def from_bgr_uint8(img: np.ndarray) -> np.ndarray:
    """BGR uint8 (as cv2.imread gives) -> RGB float32 [0, 1]."""
    return np.ascontiguousarray(img[..., ::-1], dtype=np.float32) / 255.0
