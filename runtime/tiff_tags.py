"""Tags of a TIFF file's first directory: read from an input, and added to an output after encoding.

Why: a photographer's 16-bit TIFF (a raw converter's or a scanner's) describes its colours with an ICC profile (often
ProPhoto or Adobe RGB: shown as sRGB without it, its colours dull and shifted), its print size with a resolution,
and what people wrote about it with XMP and IPTC. OpenCV writes none of them. They are added to the file OpenCV
wrote without touching a byte of it before its end: a new first directory holding the old entries and the added
ones is appended, with the added values, and the header points at it (every offset the old entries hold stays
true, so the pixels are exactly those of the file written without them). Classic TIFF only (32-bit offsets, as
OpenCV writes); a file that does not parse is left as it is.

Whole directories (an EXIF block's, with the Exif and GPS directories they point to) are copied out of one file into
another by :func:`read_directory` and :meth:`Directory.at`: every value moved, every offset rewritten, numbers put in
the destination's byte order, every field type kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Tags carried: the ICC profile, XMP, IPTC and Photoshop's resources (where IPTC also lives), print resolution.
ICC_PROFILE, XMP, IPTC, PHOTOSHOP = 34675, 700, 33723, 34377
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 282, 283, 296
#: Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED, SSHORT, SLONG,
#: SRATIONAL, FLOAT, DOUBLE, IFD).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
#: The unit a change of byte order reverses in a value of each field type (a RATIONAL is two LONGs); 1 for bytes.
_SWAP_UNITS = {3: 2, 4: 4, 5: 4, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4}
#: How deep directories may point to directories when copied (IFD0 -> Exif -> Interoperability is 2).
_MAX_DEPTH = 3
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


#: Image width and length (height) and orientation: what :func:`layout` reads.
WIDTH, HEIGHT, ORIENTATION = 256, 257, 274
#: Directories :func:`layout` follows at most (a chain longer than this is counted as this many pages).
_MAX_PAGES = 100_000


def layout(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, pages, orientation) of a classic TIFF file: its first directory's size and orientation
    (1 where none) and how many directories (pages) it chains; None where it does not parse.

    Why: Pillow cannot open some TIFF files OpenCV decodes (3- and 4-channel float samples, what this tool writes
    for float inputs); without their size the pixel limit could not refuse them before decoding, nor the one-page
    rule a multi-page file."""
    parsed = _entries(data)
    if parsed is None:
        return None
    order, at, entries, following = parsed
    values = {}
    for tag, kind, count, field in entries:
        if tag in (WIDTH, HEIGHT, ORIENTATION) and count == 1 and kind in (3, 4):
            values[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), field)[0]
    if WIDTH not in values or HEIGHT not in values:
        return None
    pages, seen = 1, {at}
    while following and following not in seen and following + 2 <= len(data) and pages < _MAX_PAGES:
        seen.add(following)
        pages += 1
        (count,) = struct.unpack_from(order + "H", data, following)
        end = following + 2 + 12 * count
        following = struct.unpack_from(order + "I", data, end)[0] if end + 4 <= len(data) else 0
    return values[WIDTH], values[HEIGHT], pages, values.get(ORIENTATION, 1)


#: Samples per pixel (1 grey, 2 grey and alpha, 3 colour, 4 colour and alpha): what :func:`samples_per_pixel` reads.
SAMPLES_PER_PIXEL = 277
#: Bits of each sample (8, 16, 32).
BITS_PER_SAMPLE = 258
#: Which extra samples a pixel holds (0 unspecified, 1 associated alpha, 2 unassociated alpha).
EXTRA_SAMPLES = 338


def samples_per_pixel(data: bytes) -> int | None:
    """How many samples each pixel of a classic TIFF file's first page holds (1 where the tag is absent, as the
    TIFF standard says); None for anything else."""
    if not is_tiff(data):
        return None
    found = read_tags(data, (SAMPLES_PER_PIXEL,)).get(SAMPLES_PER_PIXEL)
    if found is None:
        return 1
    kind, _, value = found
    form = {3: "H", 4: "I"}.get(kind)  # SHORT or LONG; anything else is a malformed file
    return struct.unpack_from(_ORDERS[data[:4]] + form, value)[0] if form else None


def alpha_kinds(data: bytes) -> tuple[int, ...]:
    """A classic TIFF's extra samples that are transparency: 1 (associated: colours premultiplied by it) or 2
    (unassociated: colours as they are, what Pillow, GIMP and Photoshop write); () for none or anything else."""
    found = read_tags(data, (EXTRA_SAMPLES,)).get(EXTRA_SAMPLES) if is_tiff(data) else None
    if found is None or found[0] != 3:  # SHORT values
        return ()
    _, count, value = found
    kinds = struct.unpack_from(f"{_ORDERS[data[:4]]}{count}H", value)
    return tuple(kind for kind in kinds if kind in (1, 2))


def read_tags(data: bytes, wanted: tuple[int, ...]) -> dict[int, tuple[int, int, bytes]]:
    """The ``wanted`` tags of a TIFF file's first directory: tag -> (type, count, value bytes in the file's byte
    order); tags whose value lies outside ``data`` are left out, as is everything of a file that does not parse."""
    parsed = _entries(data)
    if parsed is None:
        return {}
    order, _, entries, _ = parsed
    found = {}
    for tag, kind, count, field in entries:
        size = TYPE_SIZES.get(kind, 0) * count
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


def in_order(value: bytes, kind: int, source: str, target: str) -> bytes:
    """``value`` (of field type ``kind``, in byte order ``source``) in byte order ``target``."""
    unit = _SWAP_UNITS.get(kind, 1)
    if source == target or unit == 1:
        return value
    return b"".join(value[i:i + unit][::-1] for i in range(0, len(value) - len(value) % unit, unit))


@dataclass(frozen=True)
class Directory:
    """A directory copied out of a file: its entries as (tag, type, count, value bytes in ``order``), the directories
    some of them point to, and the tags left out of it (:func:`read_directory`)."""

    order: str
    entries: tuple[tuple[int, int, int, bytes], ...]
    children: tuple[tuple[int, Directory], ...] = ()
    left_out: frozenset[int] = frozenset()

    def at(self, offset: int, order: str) -> bytes:
        """Its bytes in byte ``order``, laid out to start at ``offset`` of a file: the entries (ascending tags,
        children's pointers among them) and a zero link (no next directory), then the values and the children, each
        on a word boundary, every offset pointing where they land."""
        count = len(self.entries) + len(self.children)
        tail, fields = b"", []
        start = offset + 2 + 12 * count + 4

        def place(value: bytes) -> bytes:  # the value's field: where it lands, appended to tail
            nonlocal tail
            tail += b"\x00" * (len(tail) % 2)
            field = struct.pack(order + "I", start + len(tail))
            tail += value
            return field

        for tag, kind, number, value in self.entries:
            value = in_order(value, kind, self.order, order)
            fields.append((tag, kind, number, value.ljust(4, b"\x00") if len(value) <= 4 else place(value)))
        for tag, child in self.children:
            tail += b"\x00" * (len(tail) % 2)
            fields.append((tag, 4, 1, struct.pack(order + "I", start + len(tail))))
            tail += child.at(start + len(tail), order)
        head = struct.pack(order + "H", count) + b"".join(struct.pack(order + "HHI", tag, kind, number) + field
                                                          for tag, kind, number, field in sorted(fields))
        return head + struct.pack(order + "I", 0) + tail


def read_directory(data: bytes, at: int, order: str, pointers: frozenset[int] = frozenset(),
                   only: frozenset[int] | None = None, skip: frozenset[int] = frozenset(),
                   _above: tuple[int, ...] = ()) -> Directory | None:
    """The directory at offset ``at`` of a TIFF-structured ``data`` in byte ``order``, its values copied out; None
    where its entries do not lie in ``data``.

    ``pointers``: tags that point to a directory, copied as children (with the same ``pointers`` and ``skip``, up to
    :data:`_MAX_DEPTH` deep; one that does not parse, or that is one of those pointing to it, is left out).
    ``only``: the tags kept of this directory (not of its children; None: all). ``skip``: tags left out at every
    depth (named in :attr:`Directory.left_out`). An entry whose value lies outside ``data``, of a type TIFF does not
    define, or an IFD not followed is left out.
    """
    if at < 8 or at + 2 > len(data) or at in _above:
        return None
    (count,) = struct.unpack_from(order + "H", data, at)
    if at + 2 + 12 * count + 4 > len(data):
        return None
    entries, children, left_out = [], [], set()
    for entry in range(at + 2, at + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", data, entry)
        if (only is not None and tag not in only) or tag in skip:
            left_out |= {tag} & skip
            continue
        if tag in pointers:  # one offset, as a LONG or IFD (a SHORT where a writer chose one); else nowhere
            where = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, entry + 8)[0] if (
                kind in (3, 4, 13) and number == 1) else 0
            child = read_directory(data, where, order, pointers, None, skip, (*_above, at)) if (
                len(_above) + 1 < _MAX_DEPTH) else None
            if child is not None:
                children.append((tag, child))
                left_out |= child.left_out
            continue
        size = TYPE_SIZES.get(kind, 0) * number
        if not size or kind == 13:  # an IFD not followed: an offset into ``data``, wrong anywhere else
            continue
        if size <= 4:
            entries.append((tag, kind, number, data[entry + 8:entry + 8 + size]))
            continue
        (where,) = struct.unpack_from(order + "I", data, entry + 8)
        if where + size <= len(data):
            entries.append((tag, kind, number, data[where:where + size]))
    return Directory(order, tuple(entries), tuple(children), frozenset(left_out))


def with_tags(encoded: bytes, tags: dict[int, tuple[int, int, bytes]], directory: Directory | None = None) -> bytes:
    """``encoded`` (a classic TIFF file) with ``tags`` (tag -> (type, count, value bytes in ``encoded``'s byte
    order)) and the entries of ``directory`` (copied by :func:`read_directory`; ``tags`` win) added to its first
    directory, replacing entries of the same tag; ``encoded`` itself where it does not parse, or where the result
    would pass the 4 GiB classic TIFF holds."""
    parsed = _entries(encoded)
    if parsed is None or not (tags or directory is not None and (directory.entries or directory.children)):
        return encoded
    order, _, entries, following = parsed
    out = bytearray(encoded)
    added = []
    if directory is not None:  # laid out where it lands: its entries' values and children then lie in place
        out += b"\x00" * (len(out) % 2)
        laid_out = directory.at(len(out), order)
        for i in range(struct.unpack_from(order + "H", laid_out)[0]):
            tag, kind, count = struct.unpack_from(order + "HHI", laid_out, 2 + 12 * i)
            if tag not in tags:
                added.append((tag, kind, count, laid_out[10 + 12 * i:14 + 12 * i]))
        out += laid_out
    for tag, (kind, count, value) in sorted(tags.items()):
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            out += b"\x00" * (len(out) % 2)  # values start on a word boundary
            field = struct.pack(order + "I", len(out))
            out += value
        added.append((tag, kind, count, field))
    replaced = set(tags) | {entry[0] for entry in added}
    kept = [entry for entry in entries if entry[0] not in replaced]
    out += b"\x00" * (len(out) % 2)
    first = len(out)
    merged = sorted(kept + added, key=lambda entry: entry[0])  # TIFF requires ascending tags
    out += struct.pack(order + "H", len(merged))
    for tag, kind, count, field in merged:
        out += struct.pack(order + "HHI", tag, kind, count) + field
    out += struct.pack(order + "I", following)
    if len(out) >= 1 << 32:
        return encoded
    struct.pack_into(order + "I", out, 4, first)
    return bytes(out)
