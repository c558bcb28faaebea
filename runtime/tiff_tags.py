"""Tags of a TIFF file's first directory: read from an input, and added to an output after encoding.

Why: a photographer's 16-bit TIFF (a raw converter's or a scanner's) describes its colours with an ICC profile (often
ProPhoto or Adobe RGB: shown as sRGB without it, its colours dull and shifted), its print size with a resolution,
and what people wrote about it with XMP and IPTC. OpenCV writes none of them. They are added to the file OpenCV
wrote without touching a byte of it before its end: a new first directory holding the old entries and the added
ones is appended, with the added values, and the header points at it (every offset the old entries hold stays
true, so the pixels are exactly those of the file written without them). Classic TIFF only (32-bit offsets, as
OpenCV writes); a file that does not parse is left as it is.
"""

from __future__ import annotations

import struct

#: Tags carried: the ICC profile, XMP, IPTC and Photoshop's resources (where IPTC also lives), print resolution.
ICC_PROFILE, XMP, IPTC, PHOTOSHOP = 34675, 700, 33723, 34377
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 282, 283, 296
#: Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED, SSHORT, SLONG,
#: SRATIONAL, FLOAT, DOUBLE).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_ORDERS = {b"II*\x00": "<", b"MM\x00*": ">"}
_BIGTIFF = (b"II+\x00", b"MM\x00+")


def is_tiff(data: bytes, big: bool = False) -> bool:
    """Whether ``data`` starts as a classic TIFF file (``big``: or as a BigTIFF one, 64-bit offsets)."""
    return data[:4] in _ORDERS or (big and data[:4] in _BIGTIFF)


def _entries(data: bytes) -> tuple[str, int, list[tuple[int, int, int, bytes]], int] | None:
    """(byte order, first directory's offset, its entries as (tag, type, count, 4-byte value field), next
    directory's offset), or None where the first directory does not fit in ``data``."""
    order = _ORDERS.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (at,) = struct.unpack_from(order + "I", data, 4)
    if at + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, at)
    end = at + 2 + 12 * count
    if end + 4 > len(data):
        return None
    entries = [(*struct.unpack_from(order + "HHI", data, at + 2 + 12 * i), data[at + 10 + 12 * i:at + 14 + 12 * i])
               for i in range(count)]
    return order, at, entries, struct.unpack_from(order + "I", data, end)[0]


def read_tags(data: bytes, wanted: tuple[int, ...]) -> dict[int, tuple[int, int, bytes]]:
    """The ``wanted`` tags of a TIFF file's first directory: tag -> (type, count, value bytes in the file's byte
    order); tags whose value lies outside ``data`` are left out, as is everything of a file that does not parse."""
    parsed = _entries(data)
    if parsed is None:
        return {}
    order, _, entries, _ = parsed
    found = {}
    for tag, kind, count, field in entries:
        size = _TYPE_SIZES.get(kind, 0) * count
        if tag not in wanted or not size:
            continue
        if size <= 4:
            found[tag] = (kind, count, field[:size])
            continue
        (offset,) = struct.unpack(order + "I", field)
        if offset + size <= len(data):
            found[tag] = (kind, count, data[offset:offset + size])
    return found


def byte_order(data: bytes) -> str | None:
    """``"<"`` or ``">"``: a TIFF file's byte order, None where it is not one."""
    return _ORDERS.get(data[:4])


def with_tags(encoded: bytes, tags: dict[int, tuple[int, int, bytes]]) -> bytes:
    """``encoded`` (a classic TIFF file) with ``tags`` (tag -> (type, count, value bytes in ``encoded``'s byte
    order)) added to its first directory, replacing entries of the same tag; ``encoded`` itself where it does not
    parse, or where the result would pass the 4 GiB classic TIFF holds."""
    parsed = _entries(encoded)
    if parsed is None or not tags:
        return encoded
    order, _, entries, following = parsed
    out = bytearray(encoded)
    added = []
    for tag, (kind, count, value) in sorted(tags.items()):
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            out += b"\x00" * (len(out) % 2)  # values start on a word boundary
            field = struct.pack(order + "I", len(out))
            out += value
        added.append((tag, kind, count, field))
    kept = [entry for entry in entries if entry[0] not in tags]
    out += b"\x00" * (len(out) % 2)
    directory = len(out)
    merged = sorted(kept + added, key=lambda entry: entry[0])  # TIFF requires ascending tags
    out += struct.pack(order + "H", len(merged))
    for tag, kind, count, field in merged:
        out += struct.pack(order + "HHI", tag, kind, count) + field
    out += struct.pack(order + "I", following)
    if len(out) >= 1 << 32:
        return encoded
    struct.pack_into(order + "I", out, 4, directory)
    return bytes(out)
