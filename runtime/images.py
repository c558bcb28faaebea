"""Reading and normalising user images: numpy arrays (uint8/uint16/float, grey, BGR/RGB, alpha) and PIL images.

The network takes three colour channels; :func:`split_image` turns whatever the user gave into an HxWx3 array
plus what is needed to give the result back in the same form (:func:`merge_image`).
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banet.errors import first_line
from banet.outputs import write_atomic, write_error
from banet.processing import ImageFormatError
from banet.shapes import DEFAULT_MAX_PIXELS, MIN_SIDE, hw_text
from runtime import tiff_tags
from runtime.image_formats import (
    ENCODER_OPTIONS,
    SUFFIX_FORMATS,
    container_format,
    deep_heif_pixels,
    enable,
    encode_deep_heif,
    heif_bit_depth,
    swap_red_blue,
)
from runtime.image_metadata import (
    EXIF_HEADER,
    NO_METADATA,
    ImageMetadata,
    embed,
    encoder_metadata,
    metadata_of,
    profile_fits,
)
from runtime.png_chunks import png_cut_short, png_data_short, png_exif, png_grey_transparent, png_header
from runtime.sample_depth import FLOAT_SUFFIXES, fit_to_format, pnm_maxval, to_full_scale

#: Bytes per pixel of one float32 copy of a colour image: the runtime holds the whole image in a few such copies
#: (network input, output) whatever the tiling, which bounds the working memory only.
_FLOAT_BYTES_PER_PIXEL = 3 * 4
#: Integer dtypes images may have (besides floats in [0, 1]); checked here, with the rest of the image's form, so
#: that a list refuses a bad image before any of the others run (the same rule as :mod:`banet.processing`).
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif",
                  *SUFFIX_FORMATS}  # HEIF and AVIF: runtime.image_formats


class ImageReadError(OSError):
    """A file that does not exist or cannot be decoded as an image."""


class PixelLimitError(ImageReadError):
    """An image over the pixel limit (``max_pixels``, --max-megapixels), refused from its header before decoding."""


@dataclass(frozen=True)
class ImageForm:
    """How the caller's image looked, so the result is returned in the same form."""

    kind: str  # "grey2d", "grey3d", "colour", "colour+alpha"
    channel_order: str  # "BGR" or "RGB" for colour channels
    dtype: np.dtype
    pil_mode: str | None = None
    grey_channels: bool = False  # three equal colour channels: returned exactly grey
    #: a PIL image's colour profile, resolution and EXIF (orientation upright), put on the returned image
    pil_info: tuple[tuple[str, object], ...] = ()


def check_pixels(height: int, width: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """:class:`ImageFormatError` (one line) for an image handed to the API with more than ``max_pixels`` pixels,
    checked from its size alone, before any copy of it is made (None: no limit)."""
    pixels = height * width
    if max_pixels is None or pixels <= max_pixels:
        return
    need = pixels * _FLOAT_BYTES_PER_PIXEL
    raise ImageFormatError(f"image of {height}x{width} pixels is {pixels / 1e6:.10g} megapixels, over the limit of "
                           f"{max_pixels / 1e6:g} megapixels: it is held whole in float32 ({need / 1e9:.3g} GB a "
                           "copy, a few copies) whatever the tiling, which bounds only the network's working memory; "
                           "raise the limit (--max-megapixels; Deblurrer(max_pixels=), None: no limit) if this machine "
                           "has the memory")


def split_image(image, rgb: bool = False,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray | None, ImageForm]:
    """User image -> (HxWx3 colour array in its own dtype, alpha plane or None, form).

    PIL images are always RGB(A)/L; numpy arrays are BGR unless ``rgb``. Raises :class:`ImageFormatError` for
    anything that is not a 2-D image with 1, 3 or 4 channels, or is smaller than 2x2, or is larger than
    ``max_pixels`` (:func:`check_pixels`, before any copy), and :class:`ImageReadError` for a PIL image whose pixels
    cannot be read (closed, or a lazily opened file that is truncated).
    """
    pil_mode, pil_info = None, ()
    if _is_pil(image):
        check_pixels(image.size[1], image.size[0], max_pixels)
        image = _loaded_pil(image)
        pil_mode = image.mode
        pil_info = tuple((key, image.info[key]) for key in _PIL_CARRIED if image.info.get(key))
        # a transparent colour (an L or RGB PNG's tRNS) or an RGBA palette: converted to RGBA below, never dropped
        transparent = _has_alpha(image) and image.mode not in _ALPHA_MODES
        array = None if transparent else _pil_array(image, detect_8bit=True)
        if array is None:
            target = "RGBA" if _has_alpha(image) else "RGB"
            try:
                image = image.convert(target)
            except (ValueError, OSError) as exc:
                raise ImageFormatError(f"a PIL image of mode {pil_mode} cannot be converted to {target}: "
                                       f"{first_line(exc)}") from None
            pil_mode = image.mode
            array = np.asarray(image)
        rgb = True
    elif isinstance(image, np.ma.MaskedArray):
        raise ImageFormatError("a masked array: its masked pixels have no values to deblur; pass "
                               "array.filled(value) instead")
    elif isinstance(image, np.ndarray):
        array = np.asarray(image)  # a subclass (np.matrix...) as the plain array it holds
        if array.ndim >= 2:
            check_pixels(array.shape[0], array.shape[1], max_pixels)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
    else:
        raise ImageFormatError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    if array.size == 0:
        raise ImageFormatError(f"empty image: shape {array.shape}")
    if array.dtype not in _DTYPES and not np.issubdtype(array.dtype, np.floating):
        raise ImageFormatError(f"unsupported image dtype {array.dtype}: use uint8, uint16 or float in [0, 1]")
    if array.ndim == 2:
        colour, alpha, kind = np.repeat(array[..., None], 3, axis=2), None, "grey2d"
    elif array.ndim == 3 and array.shape[2] == 1:
        colour, alpha, kind = np.repeat(array, 3, axis=2), None, "grey3d"
    elif array.ndim == 3 and array.shape[2] == 3:
        colour, alpha, kind = array, None, "colour"
    elif array.ndim == 3 and array.shape[2] == 4:
        colour, alpha, kind = array[..., :3], array[..., 3], "colour+alpha"
    else:
        channels_first = array.ndim == 3 and array.shape[0] in (1, 3, 4)
        hint = ("a channels-first (CxHxW) image? put the channels last: image.transpose(1, 2, 0)" if channels_first
                else "pass batches as a list of images")
        raise ImageFormatError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {array.shape} "
                               f"({array.ndim} dimensions); {hint}")
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageFormatError(f"image of {array.shape[0]}x{array.shape[1]} pixels is too small to deblur "
                               f"(at least {MIN_SIDE}x{MIN_SIDE})")
    grey_channels = kind.startswith("colour") and _channels_equal(colour)
    return colour, alpha, ImageForm(kind, "RGB" if rgb else "BGR", array.dtype, pil_mode, grey_channels, pil_info)


#: PIL modes with an alpha band ("LAB" has an "A" band too, but it is a colour axis, not transparency).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


#: What a PIL image's ``info`` carries to the returned image: its colour profile (kept where it describes the returned
#: mode's channels), resolution and EXIF (upright: :func:`_loaded_pil` turned the pixels and the EXIF together).
_PIL_CARRIED = ("icc_profile", "dpi", "exif")


def _has_alpha(image) -> bool:
    """Whether a PIL image carries transparency: an alpha band (premultiplied too), a transparent colour, or a
    palette of RGBA colours (what ``Image.quantize`` makes of an RGBA image)."""
    palette = getattr(image, "palette", None) if image.mode == "P" else None
    return (image.mode in _ALPHA_MODES or "transparency" in image.info
            or (palette is not None and getattr(palette, "mode", "") == "RGBA"))


def _with_info(image, carried: tuple[tuple[str, object], ...]):
    """``image`` (the returned PIL image) with the input's ``carried`` info; a colour profile only where its colour
    space is the image's (a grey profile on RGB, or a CMYK one on the RGB a CMYK image is returned as, would
    misdescribe it)."""
    for key, value in carried:
        if key == "icc_profile" and not (isinstance(value, bytes) and profile_fits(
                value, 1 if image.mode in ("L", "I", "I;16", "F") else 3)):
            continue
        image.info[key] = value
    return image


def _channels_equal(colour: np.ndarray) -> bool:
    """Whether all three colour channels hold the same values: a grey photo stored as colour."""
    return bool(np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]))


def _grey(colour: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """HxWx3 restored colour -> HxW grey in ``dtype``: the mean of the channels (rounded for integer types)."""
    grey = colour.mean(axis=2, dtype=np.float32 if colour.dtype.itemsize <= 4 else np.float64)
    if np.issubdtype(dtype, np.integer):
        grey = np.rint(grey)
    return grey.astype(dtype)


def merge_image(colour: np.ndarray, alpha: np.ndarray | None, form: ImageForm):
    """Inverse of :func:`split_image` for a restored HxWx3 colour array in the original dtype.

    A grey input (one channel, or three equal ones) comes back exactly grey: the network's three outputs
    differ slightly, so their mean is returned in every channel.
    """
    if form.kind in ("grey2d", "grey3d"):
        out = _grey(colour, form.dtype)
        out = out[..., None] if form.kind == "grey3d" else out
    else:
        if form.grey_channels:
            colour = np.repeat(_grey(colour, colour.dtype)[..., None], 3, axis=2)
        if form.kind == "colour+alpha":
            out = np.concatenate([colour, alpha[..., None].astype(colour.dtype)], axis=2)
        else:
            out = colour
    if form.pil_mode is not None:
        from PIL import Image

        if form.pil_mode == "I":
            return _with_info(Image.fromarray(out.astype(np.int32)), form.pil_info)
        if form.pil_mode.startswith("I;16"):
            return _with_info(Image.fromarray(out.astype(np.uint16)), form.pil_info)  # -> I;16
        return _with_info(Image.fromarray(out.astype(np.float32) if form.pil_mode == "F" else out), form.pil_info)
    return out


#: PIL modes taken as they are (grey modes "I" and "I;16*" are 8- or 16-bit data, see :func:`_pil_array`; "F" is
#: float in [0, 1]); any other mode (palette, CMYK, YCbCr, 1-bit, LA...) is converted to RGB or RGBA.
_PIL_DIRECT = ("L", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _pil_array(image, detect_8bit: bool = False) -> np.ndarray | None:
    """The pixels of a PIL image in a mode taken directly, or None when it must be converted first.

    Mode "I" (32-bit integers, what PIL gives for 16-bit PNGs) must hold 16-bit values: it becomes uint16
    (and is returned as mode "I" again). Mode "F" must be float in [0, 1], like float arrays. With
    ``detect_8bit`` (images handed to the API, whose bit depth PIL does not record), integer modes "I" and "I;16*"
    whose values all lie in 0..255 are 8-bit data (``Image.convert("I")`` of an 8-bit image) and become uint8.
    """
    if image.mode not in _PIL_DIRECT:
        return None
    array = np.asarray(image)
    if image.mode.startswith("I"):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageFormatError(f"PIL image of mode I holds values in [{lo}, {hi}]; only 8-bit (0..255) or "
                                   "16-bit (0..65535) data is supported")
        return array.astype(np.uint8 if detect_8bit and hi <= 255 else np.uint16)  # native byte order
    return array


#: EXIF tag 274: how the stored pixels must be turned to be shown upright.
_ORIENTATION = 0x0112


def _loaded_pil(image):
    """A PIL image with its pixels loaded and its EXIF orientation applied (it is returned upright, as files are
    read); one line for an image that is closed or truncated."""
    try:
        image.load()
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception as exc:  # PIL raises ValueError (closed), OSError/SyntaxError (truncated, corrupt)...
        raise ImageReadError(f"cannot read the pixels of this PIL image ({image.mode}, "
                             f"{hw_text(image.size[1], image.size[0])}): {first_line(exc)}") from None
    if orientation in range(2, 9):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    return image


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (HxW...) upright following an EXIF orientation (1-8; anything else: unchanged)."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return array if transform is None else np.ascontiguousarray(transform(array))


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


def quiet_opencv(silent: bool = False) -> None:
    """Keep OpenCV's and FFmpeg's own warnings ("PNG input buffer is incomplete", "moov atom not found") off stderr:
    a file that fails is reported in one ``error:`` line of the command's, not with the decoder's lines besides.
    OpenCV keeps its error lines unless ``silent``. The one switch for every command that reads images."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when a video is opened
    cv2 = opencv()
    if cv2 is not None:
        cv2.setLogLevel(0 if silent else 2)  # OpenCV's LOG_LEVEL_SILENT / LOG_LEVEL_ERROR


def require_opencv(what: str):
    """``cv2`` for a feature only OpenCV has (videos); an error naming the extra otherwise."""
    cv2 = opencv()
    if cv2 is None:
        raise ImageReadError(f"{what} needs OpenCV, which is not installed: {OPENCV_HINT}")
    return cv2




class ImageWriteError(OSError):
    """An output image that cannot be encoded or written (a full disk...); the message names the file."""


@dataclass(frozen=True)
class _Header:
    """What Pillow reads from a file's header without decoding its pixels."""

    width: int
    height: int
    frames: int
    orientation: int
    format: str
    metadata: ImageMetadata


_PILLOW_LIMIT = threading.Lock()
#: Largest text or profile chunk Pillow decompresses from a PNG while it is read here (its own default, 1 MiB, makes
#: it refuse a photo whose profile is larger: its header, and so the size limit and orientation, would be lost):
#: 16 MiB, above the largest profile a JPEG can hold; Pillow's MAX_TEXT_MEMORY still bounds all text together.
_PNG_TEXT_LIMIT = 16 * 1024 * 1024


@contextmanager
def _pillow_limits(max_pixels: int | None):
    """Pillow's decompression-bomb limit set to ``max_pixels`` and its PNG chunk limit raised (``_PNG_TEXT_LIMIT``)
    while a file is opened; both are module settings, so one thread at a time changes them."""
    from PIL import Image, PngImagePlugin

    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK
        Image.MAX_IMAGE_PIXELS = max_pixels
        PngImagePlugin.MAX_TEXT_CHUNK = max(saved[1], _PNG_TEXT_LIMIT)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK = saved


def _read_header(data: bytes, source: str, metadata: bool = True) -> _Header | None:
    """Size, frame count, EXIF orientation and (``metadata``) the metadata outputs carry
    (:mod:`runtime.image_metadata`) from the header, or None when Pillow does not know the format.

    Pillow's own decompression-bomb limit is lifted while the header is read (never while pixels are decoded
    here without a check): the caller's ``max_pixels`` is the limit, and it needs the size to say so. No pixel is
    decoded here; a PNG that Pillow refuses for a bad chunk still gives its size (:func:`_png_size_only`).
    """
    from PIL import Image, UnidentifiedImageError

    if (kind := container_format(data)) is not None:
        enable(kind, source, ImageReadError)  # pillow-heif registered, or one line naming it
    with _pillow_limits(None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data": metadata_of says it in one line
                with Image.open(io.BytesIO(data)) as image:
                    frames = image.n_frames if getattr(image, "is_animated", False) else 1
                    png = data if image.format == "PNG" else None
                    if png is not None and "exif" not in image.info and (late := png_exif(data)) is not None:
                        image.info["exif"] = EXIF_HEADER + late  # an eXIf after the image data
                    # Image.getexif, not the PNG plugin's own: for a PNG without eXIf in its header that one decodes
                    # every pixel to look further, before the size is checked (a 1 MB PNG took 1.5 GB and 3 s here).
                    orientation = Image.Image.getexif(image).get(_ORIENTATION, 1)
                    return _Header(image.size[0], image.size[1], frames, orientation, image.format or "",
                                   metadata_of(image.info, source, data, orientation) if metadata else NO_METADATA)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError):
            # TypeError: Pillow's "Missing dimensions" for a TIFF whose directory is damaged
            return _png_size_only(data) or _tiff_header_only(data, source, metadata) or _radiance_size_only(data)


def _tiff_header_only(data: bytes, source: str, metadata: bool) -> _Header | None:
    """Size, pages, orientation and the carried tags of a TIFF file Pillow cannot open (float colour samples:
    OpenCV decodes it), read by :func:`runtime.tiff_tags.layout`; None for anything else."""
    found = tiff_tags.layout(data)
    if found is None:
        return None
    width, height, pages, orientation = found
    carried = NO_METADATA
    if metadata:
        icc = tiff_tags.read_tags(data, (tiff_tags.ICC_PROFILE,)).get(tiff_tags.ICC_PROFILE)
        carried = metadata_of({"icc_profile": icc[2]} if icc else {}, source, data, orientation)
    return _Header(width, height, pages, orientation, "TIFF", carried)


#: A Radiance HDR file's resolution line: "-Y <height> +X <width>" (or another order of its axes and signs).
_RADIANCE_SIZE = re.compile(rb"[-+]([XY]) (\d{1,9}) [-+]([XY]) (\d{1,9})\s*$")


def _radiance_size_only(data: bytes) -> _Header | None:
    """The size in a Radiance HDR file's text header (OpenCV decodes these; Pillow does not know them, and their
    run-length code makes a file of megabytes decode to gigabytes); None for anything else."""
    if not data.startswith(b"#?"):
        return None
    end = data.find(b"\n\n", 0, 65536)
    line = data[end + 2:data.find(b"\n", end + 2, end + 256)] if end >= 0 else b""
    match = _RADIANCE_SIZE.match(line)
    if match is None or match[1] == match[3]:
        return None
    sizes = {match[1]: int(match[2]), match[3]: int(match[4])}
    return _Header(sizes[b"X"], sizes[b"Y"], 1, 1, "HDR", NO_METADATA)


def _png_size_only(data: bytes) -> _Header | None:
    """The size in a PNG's IHDR where Pillow refuses the file for a bad chunk that libpng (OpenCV) skips (a truncated
    gAMA, a profile in an unknown compression...): the size limit must still apply. Nothing else is known, so
    nothing is carried; None for anything but a PNG."""
    header = png_header(data)
    return None if header is None else _Header(header.width, header.height, 1, 1, "PNG", NO_METADATA)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of :func:`read_image_and_metadata` (its metadata not read, nor warned about)."""
    return read_image_and_metadata(path, max_pixels, metadata=False)[0]


def read_image_and_metadata(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, metadata: bool = True
                            ) -> tuple[np.ndarray, ImageMetadata]:
    """Read an image file as OpenCV does (BGR, 8 or 16 bit, alpha and grey kept); with Pillow where OpenCV is not
    installed or does not know the format (GIF; 8-bit colour, 8/16-bit grey: a 16-bit colour file is refused
    rather than truncated).

    Refused in one line (:class:`ImageReadError`) before any pixel is decoded: a file whose header declares more
    than ``max_pixels`` pixels (a decompression bomb; None: only the decoders' own limits, OpenCV's 1 gigapixel and
    Pillow's 179 megapixels), and a multi-page or animated file (only
    its first page would be deblurred). The EXIF orientation is applied: the array is upright, as viewers show it.
    The metadata is what :func:`write_image` carries into an output (ICC profile, EXIF set upright); with
    ``metadata=False`` (an output written without it: ``--strip-metadata``) it is not read, so nothing is said of
    metadata that is then not written anyway (a malformed EXIF block, a maker note left out), and NO_METADATA comes
    back.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return decode_image(data, path, max_pixels, metadata)


def decode_image(data: bytes, name: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, metadata: bool = True
                 ) -> tuple[np.ndarray, ImageMetadata]:
    """The pixels and metadata of an encoded image (a file's bytes, a compressed image message's), read and refused
    as :func:`read_image_and_metadata` reads a file; ``name`` names it in the errors."""
    path = Path(name)
    header = _read_header(data, str(path), metadata)
    if header is not None:
        pixels = header.width * header.height
        if max_pixels is not None and pixels > max_pixels:
            raise PixelLimitError(f"{path}: {hw_text(header.height, header.width)} is {pixels / 1e6:.10g} "
                                 f"megapixels, over the limit of {max_pixels / 1e6:g} (a decompression bomb?); "
                                 "raise the limit (--max-megapixels, read_image(max_pixels=)) if the image is real")
        if header.frames > 1 and header.format != "MPO":  # MPO: a camera JPEG with previews; its first is the photo
            raise ImageReadError(f"{path}: a {header.format} with {header.frames} pages or frames; only single "
                                 "images are deblurred (save each page as its own file, or a video as a video)")
    image, upright = _decode(path, data, header, max_pixels)
    if header is None:
        return image, NO_METADATA
    return (image if upright else apply_orientation(image, header.orientation)), header.metadata


def _decode(path: Path, data: bytes, header: _Header | None, max_pixels: int | None) -> tuple[np.ndarray, bool]:
    """Pixels of an image file: OpenCV first (16-bit colour), Pillow where OpenCV is missing or does not know it;
    and whether the decoder turned them upright itself. OpenCV's TIFF decoder (libtiff) applies a TIFF's
    orientation tag even with ``IMREAD_UNCHANGED``, which keeps every other format as stored: before, a TIFF with
    an orientation was turned a second time (a portrait scan came back upside down and sideways)."""
    if png_cut_short(data):
        raise ImageReadError(f"{path}: the PNG file is cut short (it ends before its last chunk, IEND): truncated, or "
                             "still being copied?")
    if (short := png_data_short(data)) is not None:
        raise ImageReadError(f"{path}: the PNG's image data is cut short (it holds {short[0] / short[1]:.0%} of "
                             "the pixels its size needs; the rest would be black): a damaged file")
    cv2 = opencv()
    if cv2 is not None:
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # its "[ERROR] imdecode_(''): can't read header" block: this raises its own line
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        except cv2.error as exc:
            raise ImageReadError(f"{path}: OpenCV cannot decode it: {first_line(exc)}") from None
        finally:
            cv2.setLogLevel(level)
        if image is not None and tiff_tags.samples_per_pixel(data) == 2 and image.ndim == 2:
            # grey and alpha: OpenCV (libtiff) drops the alpha, Pillow keeps it
            return _read_with_pillow(path, data, max_pixels, hint=False, what="a grey+alpha TIFF")
        if image is not None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4 \
                and tiff_tags.alpha_kinds(data):
            # 8-bit colour and alpha: OpenCV reads it through libtiff's RGBA interface, which premultiplies the
            # colours by the alpha (half-transparent pixels came out darkened, transparent ones black); Pillow
            # keeps them as stored (and un-premultiplies an associated alpha's)
            return _read_with_pillow(path, data, max_pixels, hint=False, what="a TIFF with transparency")
        if image is not None and image.ndim == 2 and (grey_key := png_grey_transparent(data)) is not None:
            return _grey_with_transparency(image, grey_key), False
        if image is not None:
            return to_full_scale(image, pnm_maxval(data)), tiff_tags.is_tiff(data, big=True)
        if header is None:
            raise ImageReadError(f"{path}: not an image OpenCV can decode (is it a {path.suffix or 'extension-less'}"
                                 " file of another kind, truncated or empty?)")
    return _read_with_pillow(path, data, max_pixels, hint=cv2 is None)


def _grey_with_transparency(grey: np.ndarray, key: int) -> np.ndarray:
    """A grey PNG's pixels with its transparent grey level (``key``, read as OpenCV scaled it) as an alpha channel,
    BGRA as a grey+alpha PNG is read: OpenCV gives the grey alone, so the transparency was lost without a word
    (RGB PNGs with a transparent colour get their alpha from OpenCV)."""
    opaque = np.iinfo(grey.dtype).max
    alpha = np.where(grey == key, 0, opaque).astype(grey.dtype)
    return np.ascontiguousarray(np.dstack([grey, grey, grey, alpha]))


def _deep_colour_kind(data: bytes) -> str | None:
    """"a 16-bit colour PNG" (TIFF, PPM) for a colour file of more than 8 bits a sample, which Pillow reads as 8
    (OpenCV keeps them); None for anything else. Before, only PNGs were refused: a 16-bit colour TIFF or PPM was
    deblurred as 8 bits in the thin install, exit 0."""
    if _png_is_16bit_colour(data):
        return "a 16-bit colour PNG"
    if tiff_tags.is_tiff(data) and (tiff_tags.samples_per_pixel(data) or 1) >= 3:
        found = tiff_tags.read_tags(data, (tiff_tags.BITS_PER_SAMPLE,)).get(tiff_tags.BITS_PER_SAMPLE)
        if found is not None and found[0] == 3 and found[2][:2]:
            bits = int.from_bytes(found[2][:2], "little" if data[:2] == b"II" else "big")
            if bits > 8:
                return f"a {bits}-bit colour TIFF"
    if data[:2] in (b"P3", b"P6") and (pnm_maxval(data) or 0) > 255:
        return "a 16-bit colour PPM"
    return None


def _png_is_16bit_colour(data: bytes) -> bool:
    """A PNG of 16-bit RGB or RGBA samples."""
    header = png_header(data)
    return header is not None and header.bit_depth == 16 and header.colour_type in (2, 6)


def _read_with_pillow(path: Path, data: bytes, max_pixels: int | None, hint: bool = True,
                      what: str = "an image") -> tuple[np.ndarray, bool]:
    """Pixels Pillow decodes (BGR order, as OpenCV reads), and whether Pillow turned them upright itself: Pillow
    13 applies a TIFF's orientation tag as it loads it (and drops the tag), earlier versions do not (before, a
    grey+alpha TIFF was turned twice with one and not at all with the other)."""
    from PIL import ExifTags, Image, UnidentifiedImageError

    if hint and (deep := _deep_colour_kind(data)):  # where OpenCV is missing (the thin install)
        raise ImageReadError(f"{path}: {deep}; Pillow would truncate it to 8 bits: {OPENCV_HINT}")
    try:
        # The size was checked against the caller's limit: Pillow's own one moves to it. Its warnings ("Truncated
        # File Read", "tag 256 had too many entries") are not printed: the file is refused in one line, or read.
        with _pillow_limits(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                upright = image.format == "TIFF" and ExifTags.Base.Orientation not in image.tag_v2
                if image.format == "HEIF" and heif_bit_depth(image.info) > 8:
                    return deep_heif_pixels(data), False  # Pillow's plugin gives 8 bits of a 10-bit photo
                if image.mode in ("I;16", "I;16B", "I;16L", "I", "L"):
                    return _pil_array(image), upright  # uint8 for L, uint16 for the 16-bit modes
                alpha = _has_alpha(image)
                array = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError,
            TypeError, ImageFormatError) as exc:
        extra = f", or a format that needs OpenCV: {OPENCV_HINT}" if hint else ""
        # UnidentifiedImageError's own text names the in-memory buffer ("<_io.BytesIO object at 0x...>")
        detail = "no format Pillow knows" if isinstance(exc, UnidentifiedImageError) else first_line(exc)
        raise ImageReadError(f"{path}: not {what} Pillow can decode (truncated, empty, another kind of "
                             f"file{extra}): {detail}") from None
    return np.ascontiguousarray(swap_red_blue(array)), upright  # RGB(A) -> BGR(A), as OpenCV reads


def write_image(path: str | Path, image: np.ndarray, metadata: ImageMetadata = NO_METADATA,
                replace: bool = True) -> None:
    """Write an image (BGR order, as OpenCV expects) whole or not at all (:func:`banet.outputs.write_atomic`), with
    an input's ``metadata`` (:func:`read_image_and_metadata`) in PNG and JPEG files.

    The rename replaces the directory entry, so an existing file is swapped whole (never half-written, and a
    hard link elsewhere to the old file keeps the old content). Pillow writes the formats OpenCV lacks (GIF), and
    everything where OpenCV is not installed. Raises :class:`ImageWriteError` in one line (a full disk says so).
    """
    path = Path(path)
    if not path.name:
        raise ImageWriteError(f"{str(path)!r}: not a file name to write an image to")
    if path.suffix.lower() in SUFFIX_FORMATS:  # HEIF, AVIF: their encoders write the metadata themselves
        encoded = _encode(path, image, encoder_metadata(metadata, image, str(path)))
    else:
        encoded = embed(_encode(path, image), path.suffix or ".png", metadata, str(path), image)
    try:
        write_atomic(path, encoded, replace)
    except OSError as exc:
        raise ImageWriteError(write_error(exc, path, len(encoded))) from None


#: libtiff's LZW compression: lossless for every sample type.
_TIFF_LZW = 5


def encode_image(image: np.ndarray, suffix: str, name: str | Path) -> bytes:
    """``image`` (BGR(A) or grey, as :func:`write_image` takes it) encoded in the format of ``suffix`` (".jpg"),
    without metadata; ``name`` names it in the errors (:class:`ImageWriteError`)."""
    return _encode(Path(name), image, suffix=suffix)


def _encode_params(cv2, suffix: str, image: np.ndarray) -> list[int]:
    """OpenCV encoder parameters that keep ``image`` exact: a float colour TIFF is otherwise written with OpenCV's
    default for it, SGILOG, a lossy log-luminance code (errors of 2% of full scale, values outside [0, 1] that
    the same file then fails to read back as)."""
    if suffix.lower() in (".tif", ".tiff") and image.dtype.kind == "f":
        return [cv2.IMWRITE_TIFF_COMPRESSION, _TIFF_LZW]
    return []


def _opencv_writes(cv2, suffix: str, path: Path) -> bool:
    """Whether OpenCV has an encoder for ``suffix``; one line where it has one it was built with turned off (OpenEXR:
    off unless $OPENCV_IO_ENABLE_OPENEXR is set, and then OpenCV raises rather than answers)."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # its own warning block before it raises: the line below says it
    try:
        return cv2.haveImageWriter("x" + suffix)
    except cv2.error:
        raise ImageWriteError(f"{path}: this OpenCV cannot write {suffix} files (its codec for them is turned off); "
                              "write .tif instead (float samples kept)") from None
    finally:
        cv2.setLogLevel(level)


def _encode(path: Path, image: np.ndarray, metadata: dict | None = None, suffix: str | None = None) -> bytes:
    """The encoded bytes of ``image`` in the format of ``suffix`` (default: ``path``'s extension); ``metadata``: what
    Pillow's encoder writes into the file itself (``exif=``, ``icc_profile=``: HEIF and AVIF, whose encoders are
    Pillow's)."""
    if not isinstance(image, np.ndarray):
        raise ImageWriteError(f"{path}: the image to write is a {type(image).__name__}, not a numpy array")
    cv2 = opencv()
    suffix = suffix or path.suffix or ".png"
    image = fit_to_format(image, suffix, path)
    kind = SUFFIX_FORMATS.get(suffix.lower())
    if kind is not None:
        enable(kind, str(path), ImageWriteError)
    elif cv2 is not None and _opencv_writes(cv2, suffix, path):
        if image.dtype.kind == "f" and suffix.lower() not in FLOAT_SUFFIXES:
            raise ImageWriteError(f"{path}: float pixels cannot be written as {suffix} (OpenCV would cast them to "
                                  "8 bits: a black image); the input was read as float (a float TIFF or HDR file "
                                  "under another extension?): write it as .tif")
        if suffix.lower() in (".pgm", ".pbm") and image.ndim == 3:
            raise ImageWriteError(f"{path}: {suffix} files hold grey pixels only and this image is in colour; name "
                                  "it .ppm or .png")
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # its "[ERROR] imencode(): can't encode data" block: the line below says it
        try:
            ok, encoded = cv2.imencode(suffix, image, _encode_params(cv2, suffix, image))
        except cv2.error:
            ok = False
        finally:
            cv2.setLogLevel(level)
        if not ok:
            raise ImageWriteError(f"{path}: OpenCV could not encode an image of shape {image.shape} and dtype "
                                  f"{image.dtype} as {suffix}")
        return encoded.tobytes()
    from PIL import Image

    if kind == "HEIF" and image.dtype == np.uint16:
        try:
            return encode_deep_heif(image, metadata or {})
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ImageWriteError(f"{path}: pillow-heif could not encode an image of shape {image.shape} and dtype "
                                  f"{image.dtype} as 10-bit HEIF: {first_line(exc)}") from None
    if image.ndim == 3 and image.dtype != np.uint8:
        raise ImageWriteError(f"{path}: writing {image.dtype} colour images needs OpenCV: {OPENCV_HINT}")
    image = swap_red_blue(image)  # BGR(A) -> RGB(A)
    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=Image.registered_extensions().get(
            suffix.lower(), "PNG"), **ENCODER_OPTIONS.get(kind, {}), **(metadata or {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageWriteError(f"{path}: Pillow could not encode an image of shape {image.shape} and dtype "
                              f"{image.dtype} as {suffix}: {first_line(exc)}") from None
    return buffer.getvalue()
