"""HEIF (an iPhone's .heic, a Canon's .hif) and AVIF photos: which files are, and the Pillow plugins that read and
write them.

Phones store their photos as HEIF or AVIF as often as JPEG; OpenCV reads neither. Pillow reads and writes AVIF
itself (11.3 and later, built with libavif, as its wheels are); HEIF needs the pillow-heif plugin (the ``heif``
extra), registered here the first time a HEIF file is met, so that nothing is imported for other files. A file is
known by its content (the ``ftyp`` brands of its ISO media box), not its name, when it is read.

Both decoders turn the pixels upright the same way the runtime does for every file: pillow-heif applies the file's
rotation and mirroring (``irot``/``imir``) and sets the EXIF orientation to 1; Pillow's AVIF reader reports them as
the EXIF orientation, which :func:`runtime.images.read_image` then applies.

HEIF photos of more than 8 bits (a Canon's 10-bit HDR .hif, a phone's 10-bit HEIC) keep their depth: Pillow's
plugin gives 8 bits, so :func:`deep_heif_pixels` decodes them with pillow-heif itself as 16-bit samples, scaled to
the full 16-bit range as a 16-bit PNG's are, and :func:`encode_deep_heif` writes 16-bit images as 10-bit HEIF.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from runtime.sample_depth import to_full_scale

#: The output formats of these files by suffix, as Pillow names them.
SUFFIX_FORMATS = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
#: Encoder settings of the outputs: quality 90 (their defaults, 50 for HEIF and 75 for AVIF, would blur back fine
#: detail the network restored; JPEG outputs are written at OpenCV's 95).
ENCODER_OPTIONS = {"HEIF": {"quality": 90}, "AVIF": {"quality": 90}}
HEIF_HINT = "pip install 'banet-deploy[heif]' (pillow-heif)"
#: ``ftyp`` brands of HEIF images (HEVC-coded, or the generic image brands HEIF and AVIF share).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_REGISTERED = threading.Lock()
_heif_registered = False


def container_format(data: bytes) -> str | None:
    """"HEIF" or "AVIF" for a file whose first box is an ISO media ``ftyp`` of theirs, else None. AVIF wins where
    both are named (an AVIF's major brand is often the generic ``mif1``)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = min(int.from_bytes(data[:4], "big"), len(data))
    brands = {data[8:12]} | {data[at:at + 4] for at in range(16, size - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & _HEIF_BRANDS else None


def enable(kind: str, what: str, error: type[Exception]) -> None:
    """Make Pillow read and write ``kind`` ("HEIF", "AVIF"); ``error`` (the caller's one-line error, naming ``what``:
    the file) where it cannot, with the package to install."""
    if kind == "AVIF":
        from PIL import features

        if not features.check("avif"):
            raise error(f"{what}: an AVIF image; this Pillow has no AVIF support: pip install 'pillow>=11.3'")
        return
    global _heif_registered
    with _REGISTERED:
        if _heif_registered:
            return
        try:
            import pillow_heif
        except ImportError:
            raise error(f"{what}: a HEIF image (an iPhone's .heic); it needs pillow-heif: {HEIF_HINT}") from None
        pillow_heif.register_heif_opener()
        _heif_registered = True


def swap_red_blue(array: np.ndarray) -> np.ndarray:
    """BGR(A) <-> RGB(A) (alpha kept last); a grey array as it is. OpenCV's order is BGR, Pillow's RGB."""
    return array[..., [2, 1, 0, 3][:array.shape[2]]] if array.ndim == 3 else array


def heif_bit_depth(info: dict) -> int:
    """The bit depth pillow-heif records in a HEIF image's ``info`` (8 where it says none)."""
    depth = info.get("bit_depth", 8)
    return depth if isinstance(depth, int) else 8


def deep_heif_pixels(data: bytes) -> np.ndarray:
    """The primary image of a HEIF file of more than 8 bits as uint16 BGR(A) or grey, full 16-bit scale (a 10-bit
    1023 is 65535), upright as Pillow's plugin gives it. pillow-heif returns the samples shifted to the top bits,
    so a 10-bit white would be 65472 without the scaling."""
    import pillow_heif

    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    depth = heif_bit_depth(heif.info)
    array = np.asarray(heif)
    if array.dtype == np.uint16:  # (an 8-bit image has nothing deeper to keep)
        array = to_full_scale(array >> (16 - depth), 2 ** depth - 1)
    return np.ascontiguousarray(swap_red_blue(array))


def encode_deep_heif(image: np.ndarray, metadata: dict) -> bytes:
    """A uint16 image (BGR(A) or grey) as a 10-bit HEIF file (libheif keeps the top 10 bits of each sample) at the
    output quality, with ``metadata`` (``exif``, ``xmp``, ``icc_profile``: what Pillow's encoder is given)."""
    import pillow_heif

    image = swap_red_blue(image)
    mode = {2: "L;16", 3: "RGB;16", 4: "RGBA;16"}[image.ndim if image.ndim == 2 else image.shape[2]]
    heif = pillow_heif.from_bytes(mode=mode, size=(image.shape[1], image.shape[0]),
                                  data=np.ascontiguousarray(image, "<u2").tobytes())
    if metadata.get("icc_profile"):
        heif.info["icc_profile"] = metadata["icc_profile"]
    buffer = io.BytesIO()
    heif.save(buffer, **ENCODER_OPTIONS["HEIF"], **{k: v for k, v in metadata.items() if k in ("exif", "xmp")})
    return buffer.getvalue()
