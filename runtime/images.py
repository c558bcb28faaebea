"""Reading and normalising user images: numpy arrays (uint8/uint16/float, grey, BGR/RGB, alpha) and PIL images.

The network takes three colour channels; :func:`split_image` turns whatever the user gave into an HxWx3 array
plus what is needed to give the result back in the same form (:func:`merge_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banet.processing import ImageFormatError

#: Smallest height/width accepted: a 1-pixel image has no blur to remove.
MIN_SIDE = 2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageReadError(OSError):
    """A file that does not exist or cannot be decoded as an image."""


@dataclass(frozen=True)
class ImageForm:
    """How the caller's image looked, so the result is returned in the same form."""

    kind: str  # "grey2d", "grey3d", "colour", "colour+alpha"
    channel_order: str  # "BGR" or "RGB" for colour channels
    dtype: np.dtype
    pil_mode: str | None = None


def split_image(image, rgb: bool = False) -> tuple[np.ndarray, np.ndarray | None, ImageForm]:
    """User image -> (HxWx3 colour array in its own dtype, alpha plane or None, form).

    PIL images are always RGB(A)/L; numpy arrays are BGR unless ``rgb``. Raises :class:`ImageFormatError` for
    anything that is not a 2-D image with 1, 3 or 4 channels, or is smaller than 2x2.
    """
    pil_mode = None
    if _is_pil(image):
        pil_mode = image.mode
        array = _pil_array(image)
        if array is None:
            image = image.convert("RGBA" if "A" in pil_mode or "transparency" in image.info else "RGB")
            pil_mode = image.mode
            array = np.asarray(image)
        rgb = True
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ImageFormatError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    if array.size == 0:
        raise ImageFormatError(f"empty image: shape {array.shape}")
    if array.ndim == 2:
        colour, alpha, kind = np.repeat(array[..., None], 3, axis=2), None, "grey2d"
    elif array.ndim == 3 and array.shape[2] == 1:
        colour, alpha, kind = np.repeat(array, 3, axis=2), None, "grey3d"
    elif array.ndim == 3 and array.shape[2] == 3:
        colour, alpha, kind = array, None, "colour"
    elif array.ndim == 3 and array.shape[2] == 4:
        colour, alpha, kind = array[..., :3], array[..., 3], "colour+alpha"
    else:
        raise ImageFormatError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {array.shape} "
                               f"({array.ndim} dimensions); pass batches as a list of images")
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageFormatError(f"image of {array.shape[0]}x{array.shape[1]} pixels is too small to deblur "
                               f"(at least {MIN_SIDE}x{MIN_SIDE})")
    return colour, alpha, ImageForm(kind, "RGB" if rgb else "BGR", array.dtype, pil_mode)


def merge_image(colour: np.ndarray, alpha: np.ndarray | None, form: ImageForm):
    """Inverse of :func:`split_image` for a restored HxWx3 colour array in the original dtype."""
    if form.kind in ("grey2d", "grey3d"):
        grey = colour.astype(np.float64).mean(axis=2)
        if np.issubdtype(form.dtype, np.integer):
            grey = np.rint(grey)
        out = grey.astype(form.dtype)
        out = out[..., None] if form.kind == "grey3d" else out
    elif form.kind == "colour+alpha":
        out = np.concatenate([colour, alpha[..., None].astype(colour.dtype)], axis=2)
    else:
        out = colour
    if form.pil_mode is not None:
        from PIL import Image

        if form.pil_mode == "I":
            return Image.fromarray(out.astype(np.int32))
        if form.pil_mode.startswith("I;16"):
            return Image.fromarray(out)  # uint16 -> I;16
        return Image.fromarray(out.astype(np.float32) if form.pil_mode == "F" else out)
    return out


#: PIL modes taken as they are (grey modes "I" and "I;16*" are 16-bit data, "F" is float in [0, 1]); any other
#: mode (palette, CMYK, YCbCr, 1-bit, LA...) is converted to RGB or RGBA.
_PIL_DIRECT = ("L", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F")


def _pil_array(image) -> np.ndarray | None:
    """The pixels of a PIL image in a mode taken directly, or None when it must be converted first.

    Mode "I" (32-bit integers, what PIL gives for 16-bit PNGs) must hold 16-bit values: it becomes uint16
    (and is returned as mode "I" again). Mode "F" must be float in [0, 1], like float arrays.
    """
    if image.mode not in _PIL_DIRECT:
        return None
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        return array.astype(np.uint16)  # native byte order
    if image.mode == "I":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageFormatError(f"PIL image of mode I holds values in [{lo}, {hi}]; only 16-bit data "
                                   "(0..65535) is supported")
        return array.astype(np.uint16)
    return array


def _is_pil(image) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(image, Image.Image)


OPENCV_HINT = "pip install 'banet-deploy[video]' (OpenCV)"


def opencv():
    """The ``cv2`` module, or None where OpenCV is not installed (the thin deploy install reads with Pillow)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def require_opencv(what: str):
    """``cv2`` for a feature only OpenCV has (videos); an error naming the extra otherwise."""
    cv2 = opencv()
    if cv2 is None:
        raise ImageReadError(f"{what} needs OpenCV, which is not installed: {OPENCV_HINT}")
    return cv2


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as OpenCV does (BGR, 8 or 16 bit, alpha and grey kept); with Pillow where OpenCV is not
    installed (8-bit colour, 8/16-bit grey; a 16-bit colour file is refused rather than truncated)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    cv2 = opencv()
    if cv2 is None:
        return _read_with_pillow(path)
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not an image OpenCV can decode (is it a {path.suffix or 'extension-less'} "
                             "file of another kind, truncated or empty?)")
    return image


def _png_is_16bit_colour(path: Path) -> bool:
    """PNG header: bit depth (byte 24) 16 with colour type (byte 25) RGB (2) or RGBA (6)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if _png_is_16bit_colour(path):
        raise ImageReadError(f"{path}: a 16-bit colour PNG; Pillow would truncate it to 8 bits: {OPENCV_HINT}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "L"):
                return _pil_array(image)  # uint8 for L, uint16 for the 16-bit modes
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            array = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, ImageFormatError) as exc:
        raise ImageReadError(f"{path}: not an image Pillow can decode (truncated, empty, another kind of file, or a "
                             f"format that needs OpenCV: {OPENCV_HINT}): {exc}") from None
    return np.ascontiguousarray(array[..., [2, 1, 0, 3][:array.shape[2]]])  # RGB(A) -> BGR(A), as OpenCV reads


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image (BGR order, as OpenCV expects) under a temporary name, then rename it into place.

    The rename replaces the directory entry, so an existing file is swapped whole (never half-written, and a
    hard link elsewhere to the old file keeps the old content). Without OpenCV, Pillow writes it.
    """
    import os

    path = Path(path)
    encoded = _encode(path, image)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        encoded.tofile(str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _encode(path: Path, image: np.ndarray) -> np.ndarray:
    """The encoded bytes of ``image`` in the format of ``path``'s extension."""
    cv2 = opencv()
    if cv2 is not None:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
        if not ok:
            raise ImageReadError(f"{path}: OpenCV could not encode an image of shape {image.shape} and dtype "
                                 f"{image.dtype} as {path.suffix}")
        return encoded
    import io

    from PIL import Image

    if image.ndim == 3 and image.dtype != np.uint8:
        raise ImageReadError(f"{path}: writing {image.dtype} colour images needs OpenCV: {OPENCV_HINT}")
    if image.ndim == 3:
        image = image[..., [2, 1, 0, 3][:image.shape[2]]]  # BGR(A) -> RGB(A)
    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=Image.registered_extensions().get(
            path.suffix.lower(), "PNG"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(f"{path}: Pillow could not encode an image of shape {image.shape} and dtype "
                             f"{image.dtype} as {path.suffix}: {exc}") from None
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)
