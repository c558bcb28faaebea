"""A WebP file's RIFF chunks: the colour profile, EXIF and XMP added to a file OpenCV wrote, its image data untouched.

Why: OpenCV writes a "simple" WebP, one image chunk and nothing else, so a WebP photo's profile (a Display P3 phone
picture shown as sRGB without it), its EXIF and its XMP were lost. WebP's extended format holds them: a ``VP8X``
chunk first (flags saying which are present, the canvas size), ``ICCP`` before the image data, ``EXIF`` and
``XMP `` after it (Google's WebP container specification). The image chunks are copied byte for byte, so the pixels
are exactly those of the file written without metadata. A file that does not parse, or that is animated, is left as
it is.
"""

from __future__ import annotations

import struct

_RIFF, _WEBP = b"RIFF", b"WEBP"
#: VP8X flags: ICC profile, alpha, EXIF, XMP, animation.
_ICC, _ALPHA, _EXIF, _XMP, _ANIMATION = 0x20, 0x10, 0x08, 0x04, 0x02
_IMAGE_CHUNKS = (b"VP8 ", b"VP8L", b"ALPH")


def is_webp(data: bytes) -> bool:
    """Whether ``data`` starts as a WebP file (RIFF container of form WEBP)."""
    return len(data) >= 12 and data[:4] == _RIFF and data[8:12] == _WEBP


def chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(FourCC, payload) of each chunk of a WebP file, or None where one does not fit in ``data``."""
    if not is_webp(data):
        return None
    found, at = [], 12
    while at + 8 <= len(data):
        kind, (size,) = data[at:at + 4], struct.unpack_from("<I", data, at + 4)
        if at + 8 + size > len(data):
            return None
        found.append((kind, data[at + 8:at + 8 + size]))
        at += 8 + size + (size & 1)  # payloads are padded to an even length
    return found


def with_metadata(encoded: bytes, width: int, height: int, alpha: bool, icc: bytes | None = None,
                  exif: bytes | None = None, xmp: bytes | None = None) -> bytes:
    """``encoded`` (a still WebP of ``width`` x ``height`` pixels, with ``alpha`` or not) in the extended format
    with ``icc``, ``exif`` (TIFF-structured, without the ``Exif\\0\\0`` header) and ``xmp`` added; ``encoded``
    itself where none is given, where it does not parse or where it is animated."""
    parsed = chunks(encoded)
    if parsed is None or not (icc or exif or xmp) or any(kind in (b"ANIM", b"ANMF") for kind, _ in parsed):
        return encoded
    images = [(kind, payload) for kind, payload in parsed if kind in _IMAGE_CHUNKS]
    if not images:
        return encoded
    flags = (_ICC if icc else 0) | (_ALPHA if alpha else 0) | (_EXIF if exif else 0) | (_XMP if xmp else 0)
    header = struct.pack("<B3x", flags) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    ordered = [(b"VP8X", header), *([(b"ICCP", icc)] if icc else []), *images,
               *([(b"EXIF", exif)] if exif else []), *([(b"XMP ", xmp)] if xmp else [])]
    body = b"".join(kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)
                    for kind, payload in ordered)
    return _RIFF + struct.pack("<I", 4 + len(body)) + _WEBP + body
