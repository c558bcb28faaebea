"""What an image file's samples mean, and what a format can hold: the two places where a sample's scale is not the
array's dtype.

Why: two ways an image came out wrong without a word. A PNM file (PGM, PPM, PAM) declares its largest sample value
(a scanner's 12-bit 4095, a 4-bit 15) and OpenCV hands its samples back as stored, so a 12-bit PGM was deblurred as
a nearly black image: :func:`to_full_scale` scales them to their dtype's full range, as Pillow reads them. And
OpenCV's encoders of 8-bit formats (JPEG, WebP, BMP, ...) clip 16-bit samples at 255, so a 16-bit photo named
``.jpg`` came out white: :func:`fit_to_format` converts it to 8 bits (v / 257, rounded) and says so, and gives the
float-only formats (Radiance HDR, PFM, OpenEXR) floats in [0, 1] instead of integers OpenCV scales by 1/255.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Extensions of formats that hold 16-bit integer samples as they are (OpenCV's PNG, TIFF, PNM and JPEG 2000
#: encoders); every other integer format holds 8 bits.
SIXTEEN_BIT_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".pam", ".jp2"})
#: HEIF takes 16-bit samples and keeps 10 bits of them (runtime.image_formats.encode_deep_heif): a 10-bit photo's
#: own depth, so no conversion and no warning.
DEEP_SUFFIXES = SIXTEEN_BIT_SUFFIXES | {".heic", ".heif", ".hif"}
#: Extensions of formats that hold float samples as they are (TIFF too, with integers), and of those that hold
#: floats only.
FLOAT_SUFFIXES = frozenset({".tif", ".tiff", ".hdr", ".pic", ".pfm", ".exr"})
FLOAT_ONLY_SUFFIXES = FLOAT_SUFFIXES - {".tif", ".tiff"}
#: Extensions of formats that hold an alpha channel as this toolkit writes them (GIF: one transparent colour).
ALPHA_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".webp", ".gif", ".avif", ".heic", ".heif", ".hif"})

#: The magic numbers of PNM files with a largest sample value (P2 grey and P3 colour as text, P5 and P6 as bytes)
#: and the numbers of their header: width, height, largest value, between whitespace and "#" comments.
_PNM_MAGICS = (b"P2", b"P3", b"P5", b"P6")
_PNM_NUMBERS = re.compile(rb"\s*(?:#[^\n]*(?:\n|$)\s*)*(\d{1,10})")
#: A PAM file's (P7) header line giving it.
_PAM_MAXVAL = re.compile(rb"^MAXVAL\s+(\d{1,10})\s*$", re.MULTILINE)


def pnm_maxval(data: bytes) -> int | None:
    """The largest sample value a PNM or PAM file declares, or None for any other file (and a bitmap, P1/P4)."""
    if data[:2] == b"P7":
        end = data.find(b"ENDHDR", 0, 4096)
        found = _PAM_MAXVAL.search(data, 0, end) if end > 0 else None
        return int(found[1]) if found else None
    if data[:2] not in _PNM_MAGICS:
        return None
    at, numbers = 2, []
    while len(numbers) < 3 and (found := _PNM_NUMBERS.match(data, at, 1024)) is not None:
        numbers.append(int(found[1]))
        at = found.end()
    return numbers[2] if len(numbers) == 3 else None


def to_full_scale(image: np.ndarray, maxval: int | None) -> np.ndarray:
    """``image`` (a PNM file's samples as OpenCV decoded them: uint8 for a largest value under 256, else uint16)
    scaled from [0, maxval] to its dtype's full range, rounded; samples above maxval (a malformed file) become the
    full value. As it is where maxval is the dtype's own largest value, or unknown."""
    full = np.iinfo(image.dtype).max if image.dtype.kind == "u" else None
    if maxval is None or full is None or maxval == full or maxval < 1:
        return image
    scaled = (np.minimum(image, maxval).astype(np.uint64) * full + maxval // 2) // maxval
    return scaled.astype(image.dtype)


def fit_to_format(image: np.ndarray, suffix: str, name: str | Path) -> np.ndarray:
    """``image`` as the format of ``suffix`` can hold it: 16-bit samples for an 8-bit format converted to 8 bits
    (with a warning naming ``name``: detail is lost, the picture is not), integers for a float-only format as
    floats in [0, 1], an alpha channel left out of a format without one (with a warning: before, JPEG and BMP
    dropped it without a word, Sun raster wrote wrong colours and PPM failed in OpenCV's words); anything else as
    it is."""
    suffix = suffix.lower()
    if image.ndim == 3 and image.shape[2] == 4 and suffix not in ALPHA_SUFFIXES:
        log.warning("%s: its transparency (alpha channel) is not kept: %s files hold none; name it .png, .tif or "
                    ".webp to keep it", name, suffix or "extension-less")
        image = np.ascontiguousarray(image[..., :3])
    if image.dtype == np.uint16 and suffix not in DEEP_SUFFIXES | FLOAT_SUFFIXES:
        log.warning("%s: 16-bit samples written with 8 bits (%s holds no more); name it .png or .tif to keep 16 "
                    "bits", name, suffix)
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype.kind == "u" and suffix in FLOAT_ONLY_SUFFIXES:
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    return image
