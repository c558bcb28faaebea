"""A photo's colour profile (ICC) and camera metadata (EXIF), carried from the input file to its deblurred output.

Why: the network works on the stored pixel values, in whatever colour space the file declares, so the output
only *looks* like the input where it carries the input's ICC profile: a Display P3 or Adobe RGB photo written
without it is shown as sRGB, its colours dull or shifted, a silent change users see and we would not. EXIF
(capture time, camera, lens, GPS) is what anyone expects a photo tool to keep (``--strip-metadata`` drops both).

Both are copied byte for byte, except EXIF's orientation tag, which is set to 1 (upright): the pixels were turned
upright when they were read (:func:`runtime.images.read_image`), so the old value would turn them a second time.
EXIF whose first directory cannot be walked is dropped, with a warning: its orientation could not be reset.

They are written into PNG files (``iCCP`` and ``eXIf`` chunks before the image data) and JPEG files (``APP1``
Exif and ``APP2`` ICC_PROFILE segments after the JFIF header) *after* encoding, so the pixels are exactly those of
the same file written without metadata. Other output formats are written without it, with a warning.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: EXIF's header in a JPEG APP1 segment (and in Pillow's ``info["exif"]`` for JPEG and PNG).
EXIF_HEADER = b"Exif\x00\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
_ORIENTATION_TAG = 0x0112
_SHORT = 3
#: Largest payload of one JPEG segment: its 16-bit length counts itself (2 bytes).
_SEGMENT_MAX = 65535 - 2
#: Formats the metadata is written into, by output suffix.
CARRYING_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageMetadata:
    """What is carried from an input photo to its output: the ICC profile and the EXIF block (TIFF-structured bytes,
    without the ``Exif\\0\\0`` header), each None when the input has none."""

    icc_profile: bytes | None = None
    exif: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.icc_profile or self.exif)


NO_METADATA = ImageMetadata()


def metadata_of(info: dict, source: str) -> ImageMetadata:
    """The metadata of an image Pillow opened (its ``info``), with EXIF's orientation set upright.

    ``source`` names the file in the warning given when its EXIF cannot be walked (then only the profile is kept).
    TIFF files keep their EXIF in the image's own tags, which describe the stored pixels: they are not carried.
    """
    icc = info.get("icc_profile") or None
    exif = info.get("exif") or None
    if isinstance(exif, bytes) and exif.startswith(EXIF_HEADER):
        exif = exif[len(EXIF_HEADER):]
    if exif is not None:
        upright = upright_exif(exif) if isinstance(exif, bytes) else None
        if upright is None:
            log.warning("%s: its EXIF block is malformed; the output is written without it", source)
        exif = upright
    return ImageMetadata(icc if isinstance(icc, bytes) else None, exif)


def upright_exif(exif: bytes) -> bytes | None:
    """``exif`` (TIFF-structured) with its first directory's orientation set to 1, or None when that directory
    cannot be walked (a truncated or corrupt block). Everything else, maker notes included, stays byte for byte."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", exif, 4)
    if ifd + 2 > len(exif):
        return None
    (count,) = struct.unpack_from(order + "H", exif, ifd)
    if ifd + 2 + 12 * count > len(exif):
        return None
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", exif, entry)
        if tag == _ORIENTATION_TAG:
            if kind != _SHORT or number != 1:
                return None
            patched = bytearray(exif)
            struct.pack_into(order + "H", patched, entry + 8, 1)
            return bytes(patched)
    return exif


def embed(encoded: bytes, suffix: str, metadata: ImageMetadata, target: str) -> bytes:
    """``encoded`` (a whole PNG or JPEG file, per ``suffix``) with ``metadata`` written into it; other formats are
    returned as they are, with a warning naming ``target`` (the file being written)."""
    if not metadata:
        return encoded
    kind = suffix.lower()
    if kind == ".png" and encoded.startswith(b"\x89PNG\r\n\x1a\n") and encoded[12:16] == b"IHDR":
        return _embed_png(encoded, metadata)
    if kind in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        return _embed_jpeg(encoded, metadata, target)
    log.warning("%s: the input's colour profile and EXIF are not written into %s files (only %s); colours may "
                "show differently", target, kind or "extension-less", ", ".join(CARRYING_SUFFIXES))
    return encoded


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _embed_png(encoded: bytes, metadata: ImageMetadata) -> bytes:
    """iCCP (name, compression method 0, zlib data) and eXIf right after IHDR: both must precede IDAT (PNG 3rd ed.)."""
    end_of_header = 8 + 4 + 4 + 13 + 4
    chunks = b""
    if metadata.icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc_profile))
    if metadata.exif:
        chunks += _png_chunk(b"eXIf", metadata.exif)
    return encoded[:end_of_header] + chunks + encoded[end_of_header:]


def _embed_jpeg(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """APP1 Exif then APP2 ICC_PROFILE (split into numbered segments of at most 64 KiB) after SOI and any APP0."""
    at = 2
    while encoded[at:at + 2] == b"\xff\xe0":  # JFIF / JFXX headers stay first, as JFIF requires
        at += 2 + struct.unpack_from(">H", encoded, at + 2)[0]
    segments = b""
    if metadata.exif:
        if len(EXIF_HEADER) + len(metadata.exif) > _SEGMENT_MAX:
            log.warning("%s: the input's EXIF block (%d bytes) is larger than one JPEG segment holds; not written",
                        target, len(metadata.exif))
        else:
            segments += _jpeg_segment(0xE1, EXIF_HEADER + metadata.exif)
    if metadata.icc_profile:
        room = _SEGMENT_MAX - len(_ICC_HEADER) - 2
        parts = [metadata.icc_profile[i:i + room] for i in range(0, len(metadata.icc_profile), room)]
        if len(parts) > 255:
            log.warning("%s: the input's colour profile (%d bytes) is larger than JPEG can hold; not written",
                        target, len(metadata.icc_profile))
        else:
            for number, part in enumerate(parts, start=1):
                segments += _jpeg_segment(0xE2, _ICC_HEADER + bytes((number, len(parts))) + part)
    return encoded[:at] + segments + encoded[at:]


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload
