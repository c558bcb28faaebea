"""A JPEG file's segments before its image data: walked, and those that say what the photo is (IPTC captions and
rights, comments, the print density) found so that an output carries them (:mod:`runtime.image_metadata`).

Why: news agencies, archives and photo libraries keep captions, keywords, credit and copyright in IPTC (APP13
Photoshop resources) and comments (COM); scanners and layout tools keep the print size in JFIF's density: an output
at 72 dpi where the scan said 300 prints four times too large. Dropping them loses what someone wrote about a photo
without a word.

Copied byte for byte, except Photoshop's thumbnail resources (a small picture of the blurred input), left out of
APP13. Adobe's APP14 (how the input was encoded) and MPF APP2 (pointers to images appended to the input) describe
the input file itself and are not copied; EXIF, ICC and XMP have their own carriers, which make them true of the
output.
"""

from __future__ import annotations

import struct

_PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"
#: Photoshop resource IDs of thumbnails (4 and 5 and later), pictures of the input's blurred pixels.
_THUMBNAIL_RESOURCES = (0x0409, 0x040C)
_RESOURCE_SIGNATURES = (b"8BIM", b"PHUT", b"AgHg", b"DCSR")
_SOS, _EOI, _APP0, _APP1, _APP13, _COM = 0xDA, 0xD9, 0xE0, 0xE1, 0xED, 0xFE
#: JFIF density units that state a size (1 dots per inch, 2 per cm); 0 is an aspect ratio only.
_DENSITY_UNITS = (1, 2)


def segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of each segment of a JPEG file before its image data (SOS), in order; stops at the first
    that does not fit in ``data``."""
    found, at = [], 2
    if not data.startswith(b"\xff\xd8"):
        return found
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in (_SOS, _EOI):
            break
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2 or at + 2 + length > len(data):
            break
        found.append((marker, data[at + 4:at + 2 + length]))
        at += 2 + length
    return found


def descriptive(data: bytes) -> tuple[bytes | None, tuple[int, int, int] | None]:
    """A JPEG file's IPTC (APP13, thumbnails left out) and comment (COM) segments, whole and in order, or None; and
    its JFIF density (units, x, y) where it states a print size, or None."""
    carried, density = b"", None
    for marker, payload in segments(data):
        if marker == _APP0 and payload.startswith(b"JFIF\x00") and len(payload) >= 12:
            units, x, y = struct.unpack_from(">BHH", payload, 7)
            if units in _DENSITY_UNITS and x and y:
                density = (units, x, y)
        elif marker == _APP13 and payload.startswith(_PHOTOSHOP_HEADER):
            carried += segment(marker, _PHOTOSHOP_HEADER + without_thumbnails(payload[len(_PHOTOSHOP_HEADER):]))
        elif marker == _COM:
            carried += segment(marker, payload)
    return carried or None, density


def with_density(encoded: bytes, density: tuple[int, int, int] | None) -> bytes:
    """``encoded`` (a JPEG file that starts with a JFIF APP0 segment, as OpenCV writes it) stating ``density``."""
    if density is None or encoded[6:11] != b"JFIF\x00" or len(encoded) < 18:
        return encoded
    return encoded[:13] + struct.pack(">BHH", *density) + encoded[18:]


def segment(marker: int, payload: bytes) -> bytes:
    """A whole JPEG segment: marker, length, ``payload`` (at most 65533 bytes)."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def without_thumbnails(resources: bytes) -> bytes:
    """Photoshop image resources without the thumbnail ones; as they are where they do not parse (they are copied
    as the input had them)."""
    kept, at = b"", 0
    while at < len(resources):
        if resources[at:at + 4] not in _RESOURCE_SIGNATURES or at + 7 > len(resources):
            return resources
        (number,), name_length = struct.unpack_from(">H", resources, at + 4), resources[at + 6]
        size_at = at + 6 + name_length + 1 + (name_length + 1) % 2  # the Pascal name padded to an even length
        if size_at + 4 > len(resources):
            return resources
        (size,) = struct.unpack_from(">I", resources, size_at)
        end = size_at + 4 + size + size % 2
        if end > len(resources) + size % 2:
            return resources
        if number not in _THUMBNAIL_RESOURCES:
            kept += resources[at:end]
        at = end
    return kept
