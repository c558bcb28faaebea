"""A camera's EXIF block written field by field, with explicit types (Pillow's writer re-infers them): IFD0, Exif
with an Interoperability directory and a maker note, GPS; in either byte order."""

from __future__ import annotations

import struct

EXIF_IFD, GPS_IFD, INTEROP_IFD, MAKER_NOTE = 0x8769, 0x8825, 0xA005, 0x927C
PIXEL_X, PIXEL_Y = 0xA002, 0xA003
#: (tag, type, count, value bytes); Children: pointer tag -> (entries, children)
Entries = list[tuple[int, int, int, bytes]]


def directory(order: str, entries: Entries, at: int, children: dict | None = None) -> bytes:
    """A directory laid out at offset ``at`` of its block: entries, a zero link, then values and child directories."""
    children = children or {}
    count = len(entries) + len(children)
    values_at = at + 2 + 12 * count + 4
    rows, tail = [], b""
    for tag, kind, number, raw in entries:
        if len(raw) <= 4:
            rows.append((tag, struct.pack(order + "HHI", tag, kind, number) + raw.ljust(4, b"\0")))
        else:
            rows.append((tag, struct.pack(order + "HHII", tag, kind, number, values_at + len(tail))))
            tail += raw + b"\0" * (len(raw) % 2)
    for tag, (child_entries, grandchildren) in children.items():
        where = values_at + len(tail)
        rows.append((tag, struct.pack(order + "HHII", tag, 4, 1, where)))
        blob = directory(order, child_entries, where, grandchildren)
        tail += blob + b"\0" * (len(blob) % 2)
    return (struct.pack(order + "H", count) + b"".join(row for _, row in sorted(rows)) + struct.pack(order + "I", 0)
            + tail)


def camera_exif(order: str = "<", orientation: int = 6, size: tuple[int, int] = (56, 40),
                interop: bool = True) -> bytes:
    """A TIFF-structured EXIF block as a camera writes it (``size``: PixelXDimension, PixelYDimension; ``interop``:
    with an Interoperability directory, which Pillow's TIFF writer does not move)."""
    def pack(fmt: str, *values) -> bytes:
        return struct.pack(order + fmt, *values)

    def text(value: str) -> bytes:
        return value.encode() + b"\0"

    ifd0 = [(270, 2, 14, text("Harbour storm")), (271, 2, 6, text("Canon")), (272, 2, 7, text("EOS R5")),
            (274, 3, 1, pack("H", orientation)), (282, 5, 1, pack("II", 300, 1)), (296, 3, 1, pack("H", 2)),
            (306, 2, 20, text("2026:12:05 10:00:00")), (315, 2, 10, text("A. Person")),
            (33432, 2, 11, text("(c) 2026 A")), (18246, 3, 1, pack("H", 4))]
    exif = [(33434, 5, 1, pack("II", 1, 250)), (33437, 5, 1, pack("II", 28, 10)), (34855, 3, 1, pack("H", 400)),
            (36864, 7, 4, b"0231"), (36867, 2, 20, text("2026:12:05 09:59:59")),
            (37377, 10, 1, pack("ii", 797, 100)), (37380, 10, 1, pack("ii", -1, 3)), (37385, 3, 1, pack("H", 16)),
            (MAKER_NOTE, 7, 16, b"MAKERNOTE0123456"), (37510, 7, 14, b"ASCII\0\0\0hello!"),
            (PIXEL_X, 4, 1, pack("I", size[0])), (PIXEL_Y, 4, 1, pack("I", size[1])),
            (42036, 2, 12, text("RF50mm F1.8")), (0xC000, 4, 2, pack("II", 7, 8))]
    gps = [(0, 1, 4, bytes((2, 3, 0, 0))), (1, 2, 2, text("N")), (2, 5, 3, pack("IIIIII", 52, 1, 31, 1, 1250, 100)),
           (5, 1, 1, b"\0"), (6, 5, 1, pack("II", 123, 10)), (29, 2, 11, text("2026:12:05"))]
    head = (b"II*\0" if order == "<" else b"MM\0*") + pack("I", 8)
    children = {INTEROP_IFD: ([(1, 2, 4, text("R98")), (2, 7, 4, b"0100")], {})} if interop else {}
    return head + directory(order, ifd0, 8, {EXIF_IFD: (exif, children), GPS_IFD: (gps, {})})


def fields(block: bytes, at: int | None = None, path: tuple[int, ...] = ()) -> dict:
    """Every entry of a TIFF-structured block (an EXIF block or a TIFF file), from its first directory down the Exif,
    GPS and Interoperability pointers: (directory path, tag) -> (type, count, value as numbers or bytes). Values are
    decoded in the block's byte order, so blocks of either order compare equal."""
    order = "<" if block[:2] == b"II" else ">"
    at = struct.unpack_from(order + "I", block, 4)[0] if at is None else at
    sizes = {1: "B", 2: "c", 3: "H", 4: "I", 5: "II", 6: "b", 7: "c", 8: "h", 9: "i", 10: "ii"}
    found = {}
    (count,) = struct.unpack_from(order + "H", block, at)
    for entry in range(at + 2, at + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", block, entry)
        if tag in (EXIF_IFD, GPS_IFD, INTEROP_IFD):
            found.update(fields(block, struct.unpack_from(order + "I", block, entry + 8)[0], (*path, tag)))
            continue
        fmt = sizes.get(kind)
        if fmt is None:
            continue
        size = struct.calcsize("<" + fmt) * number
        where = entry + 8 if size <= 4 else struct.unpack_from(order + "I", block, entry + 8)[0]
        raw = block[where:where + size]
        if len(raw) < size:  # a value outside the block: not a field anything reads
            continue
        value = raw if fmt == "c" else struct.unpack(order + fmt * number, raw)
        found[(path, tag)] = (kind, number, value)
    return found
