"""INT8 calibration data: the user's images or the built-in held-out set, through the runtime's pre-processing.

A :class:`CalibrationSource` says where the images come from and how many, at which size:

* a folder of the user's images (``--calib-dir``): every readable image file under it, listed in sorted order,
  ``count`` of them sampled with a seeded generator, each cropped (seeded position, native resolution, so blur
  keeps its length in pixels) or resized to ``size``;
* the built-in set: blurred crops of the held-out photographs (``calibration.photos.calibration_pairs``), the
  same split the evaluation uses and never a training photo.

Images become network inputs through :func:`banet.processing.preprocess`, the one implementation the runtime
calls, so calibration sees exactly what an engine sees. The decoded, cropped images (not the float tensors) are
cached as ``.npz`` under ``$BANET_CACHE/calibration`` keyed by a hash of everything that determines them, so a
repeated build reads one file instead of decoding and blurring again. Problems with a folder (empty, unreadable
file, image smaller than the calibration size) raise :class:`CalibrationDataError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from banet.conventions import BANET, Conventions
from banet.hashing import file_sha256
from banet.machine import physical_memory
from banet.processing import ImageFormatError, preprocess

log = logging.getLogger(__name__)

#: Bump when the way images are chosen or cropped changes, so old cache entries are not reused.
CACHE_VERSION = "2"  # 2: files keyed by their content, not their modification time
MODES = ("crop", "resize")
#: Bytes per pixel a source holds at once: its images (uint16 at most: 6) and their float32 network inputs (12).
_HELD_BYTES_PER_PIXEL = 18
#: Largest square crop every held-out photo can give (``chelsea`` is 300x451).
BUILTIN_MAX_SIDE = 300


class CalibrationDataError(ValueError):
    """Calibration input that cannot be used: the message names the folder or file and what is wrong."""


def _cache_root() -> Path:
    from banet.paths import cache_dir

    return cache_dir() / "calibration"


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration images come from and how they are shaped.

    Attributes:
        folder: a folder of the user's images, or None for the built-in held-out set.
        count: number of images (a folder with fewer images gives all of them, with a warning).
        size: (height, width) of every calibration input: the engine's optimisation-profile opt size.
        batch: images per calibration batch.
        seed: sampling and crop-position seed; the same seed gives the same images on every run.
        mode: ``crop`` (seeded crop at native resolution) or ``resize`` (whole image, area-resized) for folders.
    """

    folder: Path | None = None
    count: int = 32
    size: tuple[int, int] = (256, 256)
    batch: int = 1
    seed: int = 0
    mode: str = "crop"

    def __post_init__(self) -> None:
        h, w = self.size
        multiple = BANET.size_multiple
        if self.count < 1:
            raise CalibrationDataError(f"calibration count must be >= 1, got {self.count}")
        if self.batch < 1:
            raise CalibrationDataError(f"calibration batch must be >= 1, got {self.batch}")
        if h < multiple or w < multiple or h % multiple or w % multiple:
            raise CalibrationDataError(f"calibration size {h}x{w} is not a network input size: height and width "
                                       f"must be positive multiples of {multiple}")
        if self.mode not in MODES:
            raise CalibrationDataError(f"unknown calibration mode {self.mode!r}; choose one of {MODES}")
        need, total = self.count * h * w * _HELD_BYTES_PER_PIXEL, physical_memory()
        if total and need > total:  # before: built image by image until the machine ran out of memory
            raise CalibrationDataError(f"{self.count} calibration images of {h}x{w} would hold about {need / 1e9:.3g} "
                                       f"GB in memory (as images and as network inputs); this machine has "
                                       f"{total / 1e9:.3g} GB: lower --calib-count or --calib-size")

    def describe(self) -> str:
        where = str(self.folder) if self.folder else "built-in held-out set (blurred crops, never training photos)"
        return f"{self.count} x {self.size[0]}x{self.size[1]} from {where}, seed {self.seed}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["folder"] = str(self.folder) if self.folder else None
        data["size"] = list(self.size)
        return data

    # ----------------------------------------------------------------------------------------------------------
    def _key(self) -> str:
        payload = {"version": CACHE_VERSION, **self.to_dict()}
        del payload["batch"]  # batching does not change the images
        if self.folder is None:
            from calibration.blur import DEFAULT_CONFIG

            payload["blur"] = repr(DEFAULT_CONFIG)
        else:
            # by content: images replaced with their times kept (cp -p, rsync -a, tar x) were never read again
            payload["files"] = [(str(p.relative_to(self.folder)), file_sha256(p)) for p in list_images(self.folder)]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def images(self, use_cache: bool = True) -> list[np.ndarray]:
        """The calibration images: HxWx3 BGR arrays (uint8, or uint16 for 16-bit files), ``size`` each."""
        path = _cache_root() / f"images-{self._key()}.npz" if use_cache else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as data:
                    images = [data[f"img{i:04d}"] for i in range(int(data["count"]))]
                log.info("calibration images from cache %s", path)
                return images
            except (OSError, KeyError, ValueError) as exc:
                log.warning("ignoring unreadable calibration cache %s (%s)", path, exc)
        images = self._builtin() if self.folder is None else self._from_folder()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + f".{os.getpid()}.partial.npz")
            try:  # a Ctrl-C or a full disk leaves no half-written entry in the cache
                np.savez(tmp, count=len(images), **{f"img{i:04d}": im for i, im in enumerate(images)})
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return images

    def _builtin(self) -> list[np.ndarray]:
        import cv2

        from calibration.photos import calibration_pairs, to_bgr_uint8

        h, w = self.size
        side = max(h, w)
        try:
            pairs = calibration_pairs(self.count, side, self.seed)
        except ValueError:  # larger than the smallest held-out photo: crop what fits, then resize
            log.warning("calibration size %dx%d exceeds some held-out photos; using %d px crops resized to it",
                        h, w, BUILTIN_MAX_SIDE)
            side = BUILTIN_MAX_SIDE
            pairs = calibration_pairs(self.count, side, self.seed)
        images = [to_bgr_uint8(blurred) for _, blurred, _ in pairs]
        if side >= h and side >= w:
            return [np.ascontiguousarray(im[:h, :w]) for im in images]
        return [np.ascontiguousarray(cv2.resize(im, (w, h), interpolation=cv2.INTER_CUBIC)) for im in images]

    def _from_folder(self) -> list[np.ndarray]:
        files = list_images(self.folder)
        rng = np.random.default_rng([self.seed, 0xCA11B])
        if len(files) < self.count:
            log.warning("%s holds %d images, fewer than the %d requested: using all of them", self.folder,
                        len(files), self.count)
            chosen = files
        else:
            chosen = [files[i] for i in sorted(rng.choice(len(files), self.count, replace=False))]
        return [fit_image(load_image(path), self.size, self.mode, rng, path) for path in chosen]

    def batches(self, conventions: Conventions = BANET, use_cache: bool = True) -> list[np.ndarray]:
        """NCHW float32 network inputs, ``batch`` images each (the last batch may be smaller)."""
        images = self.images(use_cache)
        out = []
        for start in range(0, len(images), self.batch):
            group = images[start:start + self.batch]
            if len({im.dtype for im in group}) > 1:  # mixed 8/16-bit files: preprocess per image
                out.append(np.concatenate([preprocess(im, conventions, pad=False)[0] for im in group]))
            else:
                out.append(preprocess(np.stack(group), conventions, pad=False)[0])
        return out

    def reader(self, input_name: str = "input", conventions: Conventions = BANET) -> CalibrationReader:
        return CalibrationReader(self.batches(conventions), input_name)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension) under ``folder``, recursively, in sorted order, hidden files and folders left out
    (macOS's ``._IMG_0001.JPG`` metadata beside a camera card's photos is no image); errors name the folder."""
    from runtime.images import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.exists():
        raise CalibrationDataError(f"calibration folder {folder} does not exist")
    if not folder.is_dir():
        raise CalibrationDataError(f"calibration folder {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise CalibrationDataError(f"calibration folder {folder} holds no images (looked for "
                                   f"{', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    return files


def load_image(path: Path) -> np.ndarray:
    """One file -> HxWx3 BGR array as the runtime reads it (grey replicated, alpha dropped)."""
    from runtime.images import ImageReadError, read_image, split_image

    try:
        colour, _, _ = split_image(read_image(path))
    except (ImageReadError, ImageFormatError) as exc:
        raise CalibrationDataError(f"calibration image {path} cannot be used: {exc}") from exc
    if colour.dtype not in (np.uint8, np.uint16):
        raise CalibrationDataError(f"calibration image {path}: unsupported pixel type {colour.dtype} "
                                   "(use 8- or 16-bit images)")
    return np.ascontiguousarray(colour)


def fit_image(image: np.ndarray, size: tuple[int, int], mode: str, rng: np.random.Generator,
              name: str | os.PathLike = "image") -> np.ndarray:
    """Crop (seeded position) or area-resize an HxWx3 image to ``size``; refuse images smaller than ``size``."""
    import cv2

    h, w = image.shape[:2]
    th, tw = size
    if h < th or w < tw:
        raise CalibrationDataError(f"calibration image {name} is {h}x{w}, smaller than the calibration size "
                                   f"{th}x{tw}: pass a smaller --calib-size or remove the image")
    if mode == "resize":
        return np.ascontiguousarray(cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA))
    y, x = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
    return np.ascontiguousarray(image[y:y + th, x:x + tw])


class CalibrationReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over pre-processed batches (re-iterable with :meth:`rewind`)."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str = "input") -> None:
        if not batches:
            raise CalibrationDataError("no calibration batches")
        self.batches = list(batches)
        self.input_name = input_name
        self._start, self._end = 0, len(self.batches)
        self._index = 0

    def get_next(self) -> dict | None:
        if self._index >= self._end:
            return None
        self._index += 1
        return {self.input_name: self.batches[self._index - 1]}

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.batches))
        self._index = self._start

    def rewind(self) -> None:
        self._start, self._end, self._index = 0, len(self.batches), 0
