"""Pre- and post-processing: the one implementation every backend and exporter calls.

Images in, images out: ``HxWxC`` (or ``NxHxWxC``) numpy arrays in uint8, uint16 or float [0, 1] become NCHW
float32 network inputs following :class:`banet.conventions.Conventions`, padded to the size multiple; network
outputs are clamped, cropped back and converted to the caller's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banet.conventions import BANET, Conventions

_INTEGER_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageFormatError(ValueError):
    """An input array that cannot be a colour image (wrong rank, channel count, dtype or range)."""


class NonFiniteOutputError(RuntimeError):
    """The network produced NaN or Inf (typically a float16 overflow); the image would be garbage."""


@dataclass(frozen=True)
class Padding:
    """Rows/columns added at the bottom/right by :func:`pad_to_multiple`; :func:`crop` removes them."""

    height: int
    width: int
    bottom: int
    right: int


def _check_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ImageFormatError(f"expected a numpy array, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageFormatError(f"expected HxWx3 or NxHxWx3 images, got shape {images.shape}")
    if 0 in images.shape:
        raise ImageFormatError(f"empty image: shape {images.shape}")
    if images.dtype not in _INTEGER_MAX and not np.issubdtype(images.dtype, np.floating):
        raise ImageFormatError(f"unsupported image dtype {images.dtype}: use uint8, uint16 or float in [0, 1]")
    return images


#: How far outside [0, 1] a float image may stray and still be taken (clipped to [0, 1]): float32 rounding
#: (1.0000001 is the float32 after 1.0) and resampling leave values this close; anything further is refused.
UNIT_TOLERANCE = 1e-6
#: A float image whose largest value is above this is data on the 0..255 scale (the message says to divide).
_EIGHT_BIT_HINT_ABOVE = 1.5


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8/uint16/float images -> float32 in [0, 1].

    Float images must be finite and in [0, 1]. The rule for values just outside: within :data:`UNIT_TOLERANCE`
    (1e-6) of [0, 1], as float32 rounding leaves them (1.0000001), they are clipped to [0, 1] (in a copy: the
    caller's array is never changed); further out, or NaN/Inf, the image is refused with
    :class:`ImageFormatError`, whose message shows the real range to 9 significant digits (so 1.0000012 is not
    shown as 1) and says to divide by 255 only when the largest value is clearly on the 8-bit scale (above 1.5).
    """
    if images.dtype in _INTEGER_MAX:
        out = images.astype(np.float32)
        out /= np.float32(_INTEGER_MAX[images.dtype])  # in place: large photos need no second float copy
        return out
    out = images.astype(np.float32, copy=False)
    lo, hi = check_unit_range(images)
    if lo < 0.0 or hi > 1.0:
        out = np.clip(out, 0.0, 1.0)  # a new array: never the caller's
    return out


def check_unit_range(images: np.ndarray) -> tuple[float, float]:
    """The (lowest, highest) value of float ``images``, refused (:class:`ImageFormatError`) where one is NaN or Inf
    or lies outside [0, 1] by more than :data:`UNIT_TOLERANCE`: the rule of :func:`to_unit_range`, which a caller
    can apply to one image of a list before they are stacked (to name the image)."""
    if not np.isfinite(images).all():
        raise ImageFormatError("float image contains NaN or Inf")
    # the range of the caller's values (before any float32 rounding), to compare and to show exactly
    lo, hi = float(images.min()), float(images.max())
    if lo < -UNIT_TOLERANCE or hi > 1.0 + UNIT_TOLERANCE:
        hint = " (divide by 255 for 8-bit data)" if hi > _EIGHT_BIT_HINT_ABOVE else ""
        raise ImageFormatError(f"float images must be in [0, 1]; got values in [{lo:.9g}, {hi:.9g}]{hint}")
    return lo, hi


def from_unit_range(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float [0, 1] -> the requested dtype (rounded for integer types)."""
    dtype = np.dtype(dtype)
    if dtype in _INTEGER_MAX:
        scaled = images * np.float32(_INTEGER_MAX[dtype])
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, _INTEGER_MAX[dtype], out=scaled)
        return scaled.astype(dtype)
    return images.astype(dtype)


def reorder_channels(images: np.ndarray, source: str, target: str) -> np.ndarray:
    """Reorder the last axis from ``source`` to ``target`` channel order ("RGB"/"BGR")."""
    source, target = source.upper(), target.upper()
    if sorted(source) != sorted(target):
        raise ValueError(f"cannot convert channel order {source} to {target}")
    if source == target:
        return images
    return images[..., [source.index(c) for c in target]]


def pad_to(batch: np.ndarray, height: int, width: int, mode: str = "reflect") -> tuple[np.ndarray, Padding]:
    """Pad an NCHW batch at the bottom/right up to ``height`` x ``width`` (never crops).

    Reflect padding needs the padding to be shorter than the axis; otherwise edge replication is used.
    """
    h, w = batch.shape[2], batch.shape[3]
    bottom, right = max(0, height - h), max(0, width - w)
    if bottom or right:
        reflect_ok = mode == "reflect" and h > bottom and w > right
        batch = np.pad(batch, ((0, 0), (0, 0), (0, bottom), (0, right)), mode="reflect" if reflect_ok else "edge")
    return batch, Padding(h, w, bottom, right)


def padded_size(height: int, width: int, multiple: int, minimum: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """The smallest size >= (height, width) and >= ``minimum`` whose sides are multiples of ``multiple``."""
    def up(value: int, low: int) -> int:
        value = max(value, low)
        return value + (-value) % multiple

    return up(height, minimum[0]), up(width, minimum[1])


def pad_to_multiple(batch: np.ndarray, multiple: int, mode: str = "reflect") -> tuple[np.ndarray, Padding]:
    """Pad an NCHW batch at the bottom/right so H and W are multiples of ``multiple``."""
    return pad_to(batch, *padded_size(batch.shape[2], batch.shape[3], multiple), mode=mode)


def crop(batch: np.ndarray, padding: Padding) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on an NCHW batch."""
    return batch[:, :, : padding.height, : padding.width]


def preprocess(images: np.ndarray, conventions: Conventions = BANET, channel_order: str = "BGR",
               pad: bool = True, min_size: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, Padding]:
    """Images (HxWx3 or NxHxWx3, any supported dtype, in ``channel_order``) -> padded NCHW float32 input.

    With ``pad``, height and width are padded up to the size multiple and to at least ``min_size``.
    """
    images = _check_images(images)
    unit = reorder_channels(to_unit_range(images), channel_order, conventions.channel_order)
    batch = np.empty((unit.shape[0], unit.shape[3], unit.shape[1], unit.shape[2]), np.float32)
    batch[...] = unit.transpose(0, 3, 1, 2)  # one NCHW copy (never a view of the caller's array)...
    batch += np.float32(conventions.offset)  # ...shifted in place
    if pad:
        target = padded_size(batch.shape[2], batch.shape[3], conventions.size_multiple, min_size)
        return pad_to(batch, *target, mode=conventions.pad_mode)
    return batch, Padding(batch.shape[2], batch.shape[3], 0, 0)


def network_output_to_unit(batch: np.ndarray, conventions: Conventions = BANET) -> np.ndarray:
    """Clamp raw NCHW network output and map it to [0, 1] (no cropping, no reordering)."""
    unit = np.clip(batch, conventions.clamp_min, conventions.clamp_max)
    unit -= np.float32(conventions.offset)
    return unit


def postprocess(batch: np.ndarray, padding: Padding, dtype: np.dtype = np.uint8,
                conventions: Conventions = BANET, channel_order: str = "BGR") -> np.ndarray:
    """Raw NCHW network output -> NxHxWx3 images in ``dtype`` and ``channel_order``, padding removed.

    Raises :class:`NonFiniteOutputError` if the output holds NaN or Inf (an FP16 overflow shows up this way):
    a garbage image is never returned silently.
    """
    if not np.isfinite(batch).all():
        raise NonFiniteOutputError("network output contains NaN or Inf (numeric overflow, e.g. in float16); "
                               "refusing to return a garbage image")
    unit = network_output_to_unit(crop(batch, padding), conventions).transpose(0, 2, 3, 1)
    unit = reorder_channels(unit, conventions.channel_order, channel_order)
    return from_unit_range(np.ascontiguousarray(unit), dtype)
