"""A photo's colour profile (ICC) and camera metadata (EXIF), carried from the input file to its deblurred output.

Why: the network works on the stored pixel values, in whatever colour space the file declares, so the output
only *looks* like the input where it carries the input's ICC profile: a Display P3 or Adobe RGB photo written
without it is shown as sRGB, its colours dull or shifted, a silent change users see and we would not. EXIF
(capture time, camera, lens, GPS) is what anyone expects a photo tool to keep (``--strip-metadata`` drops both).

Both are copied byte for byte, except EXIF's orientation tag, which is set to 1 (upright): the pixels were turned
upright when they were read (:func:`runtime.images.read_image`), so the old value would turn them a second time; and
the Exif directory's pixel size, set to the output's when it is written (turned upright, a portrait photo's width
and height swap; a side-by-side output is twice as wide). EXIF whose first directory cannot be walked is dropped,
with a warning: its orientation could not be reset. The EXIF thumbnail (a camera's 160x120 JPEG in IFD1, which
galleries and file browsers show) is of the input, blurred and in the sensor's orientation: it is made again from
the output's pixels when the output is written (:func:`output_exif`), every byte before it kept in place so that no
offset (a maker note's) moves; a thumbnail that cannot be replaced safely is dropped, with a warning. A PNG input's
colour chunks (cICP, sRGB, gAMA, cHRM: how its values map to colours where it has no profile) go into PNG outputs
the same way. A profile whose colour space does not fit the output (a grey profile on colour pixels, a CMYK profile
on the RGB pixels a CMYK JPEG is read as) is dropped, with a warning: it would misdescribe them.

What people wrote about the photo is carried too: its XMP packet (captions, keywords, ratings, rights; made true
of the output by :mod:`runtime.image_xmp`), a JPEG's IPTC and comment segments and print density
(:mod:`runtime.jpeg_segments`), a PNG's pHYs (print density) and text chunks (tEXt, zTXt, iTXt), each into
outputs of the format that holds it.

They are written into PNG files (``iCCP``, ``eXIf``, ``pHYs``, text and XMP ``iTXt`` chunks before the image data)
and JPEG files (``APP1`` Exif and XMP, ``APP2`` ICC_PROFILE, ``APP13`` and ``COM`` segments after the JFIF header,
whose density is set) *after* encoding, so the pixels are exactly those of the same file written without metadata.
Other output formats are written without it, with a warning.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from runtime import jpeg_segments, tiff_tags, webp_chunks
from runtime.image_xmp import JPEG_HEADER as XMP_JPEG_HEADER
from runtime.image_xmp import PNG_KEYWORD as XMP_PNG_KEYWORD
from runtime.image_xmp import from_imagemagick_text, output_xmp, upright_xmp
from runtime.png_chunks import (
    PNG_PROFILE_MAX,
    PNG_SIGNATURE,
    colour_matters,
    make_chunk,
    png_colour_chunks,
    png_header,
    png_text_chunks,
    split_chunks,
)

log = logging.getLogger(__name__)

#: EXIF's header in a JPEG APP1 segment (and in Pillow's ``info["exif"]`` for JPEG and PNG).
EXIF_HEADER = b"Exif\x00\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
_ORIENTATION_TAG = 0x0112
_SHORT, _LONG = 3, 4
#: Bytes of one value of each TIFF field type: where a value of more than 4 bytes lies outside its entry, how far it
#: reaches.
_TYPE_BYTES = tiff_tags.TYPE_SIZES
#: Tags that point to another directory: Exif and GPS (in IFD0), Interoperability (in the Exif directory).
_SUB_DIRECTORIES = (0x8769, 0x8825, 0xA005)
#: IFD0 tags of EXIF that describe the photo, not how a file stores its pixels: ImageDescription, Make, Model,
#: Software, DateTime, Artist, HostComputer, Copyright, Windows' rating (two) and XP title, comment, author, keywords
#: and subject; and the Exif and GPS directories. What moves between an EXIF block and a TIFF file's own tags.
_EXIF_DESCRIPTIVE = frozenset({270, 271, 272, 305, 306, 315, 316, 33432, 18246, 18249, 40091, 40092, 40093, 40094,
                               40095, 0x8769, 0x8825})
#: The camera maker's private data in the Exif directory: its own offsets may count from anywhere in the old block,
#: so it cannot be moved safely (ExifTool and Exiv2 know each maker's layout; we do not).
_MAKER_NOTE = 0x927C
#: IFD1's thumbnail: a JPEG file's offset and length (JPEGInterchangeFormat, -Length), or the strips or tiles of an
#: uncompressed one; its size (ImageWidth, ImageLength), where given.
_THUMBNAIL_OFFSET, _THUMBNAIL_LENGTH = 0x0201, 0x0202
_STRIP_OFFSETS, _TILE_OFFSETS = 0x0111, 0x0144
_WIDTH, _LENGTH = 0x0100, 0x0101
#: The Exif directory's tag, and its PixelXDimension and PixelYDimension (the picture's width and height).
_EXIF_DIRECTORY, _PIXEL_X, _PIXEL_Y = 0x8769, 0xA002, 0xA003
#: Size a new thumbnail fits in where the old one's cannot be read (Exif's standard thumbnail).
_THUMBNAIL_BOUNDS = (160, 120)
#: JPEG qualities a new thumbnail is tried at, the next where the EXIF would not fit in its JPEG segment.
_THUMBNAIL_QUALITIES = (90, 75, 50)
#: Decoded channels (1 grey, 3 colour) an ICC profile describes, by its data colour space (bytes 16-19 of its
#: header). Decoders give back grey or RGB: a space of other values (CMYK, as a CMYK JPEG's profile, CMY, HSV...)
#: describes neither (0). Lab and XYZ data is three values too and is left as it is (libpng warns that a PNG wants
#: RGB). A signature not known here (not an ICC profile at all) is not judged.
_ICC_CHANNELS = {b"GRAY": 1, b"RGB ": 3, b"Lab ": 3, b"XYZ ": 3,
                 **dict.fromkeys([b"CMYK", b"CMY ", b"HSV ", b"HLS ", b"YCbr", b"Luv ", b"Yxy "], 0),
                 **{b"%XCLR" % n: 0 for n in range(2, 16)}}
#: Largest payload of one JPEG segment: its 16-bit length counts itself (2 bytes).
_SEGMENT_MAX = 65535 - 2
#: Formats the metadata is written into, by output suffix (HEIF and AVIF by their encoders: :func:`encoder_metadata`).
CARRYING_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".webp", ".heic", ".avif")


@dataclass(frozen=True)
class ImageMetadata:
    """What is carried from an input photo to its output: the ICC profile and the EXIF block (TIFF-structured bytes,
    without the ``Exif\\0\\0`` header), each None when the input has none."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    #: A PNG input's colour chunks (cICP, sRGB, gAMA, cHRM), whole and in order, or None.
    png_colour: bytes | None = None
    #: The XMP packet, its orientation set upright where the pixels were turned (:mod:`runtime.image_xmp`), or None.
    xmp: bytes | None = None
    #: A JPEG input's IPTC (APP13) and comment (COM) segments, whole and in order (:mod:`runtime.jpeg_segments`).
    jpeg_segments: bytes | None = None
    #: A JPEG input's JFIF density (units, x, y) where it states a print size.
    jfif_density: tuple[int, int, int] | None = None
    #: A PNG input's pHYs and text chunks (not its EXIF or XMP ones), whole and in order (:func:`png_text_chunks`).
    png_text: bytes | None = None
    #: A TIFF input's IPTC, Photoshop resources (thumbnails left out) and print resolution: (tag, type, count,
    #: little-endian value bytes) each (:func:`tiff_carried_tags`).
    tiff_tags: tuple[tuple[int, int, int, bytes], ...] | None = None

    def __bool__(self) -> bool:
        return any((self.icc_profile, self.exif, self.png_colour, self.xmp, self.jpeg_segments, self.jfif_density,
                    self.png_text, self.tiff_tags))


NO_METADATA = ImageMetadata()


def metadata_of(info: dict, source: str, data: bytes | None = None, orientation: int = 1) -> ImageMetadata:
    """The metadata of an image Pillow opened (its ``info``), with EXIF's orientation set upright (XMP's too, where
    the pixels were turned by ``orientation``, which Pillow reads from either).

    ``source`` names the file in the warning given when its EXIF cannot be walked (then only the profile is kept).
    ``data``: the whole file, whose PNG chunks (colour, density, text) or JPEG segments (IPTC, comments, density,
    XMP) are carried too (Pillow keeps only some of their values). TIFF files keep their EXIF in the image's own
    first directory (and the Exif and GPS directories it points to): its descriptive tags are carried as an EXIF
    block (:func:`tiff_exif`).
    """
    icc = info.get("icc_profile") or None
    tiff = data if data is not None and tiff_tags.is_tiff(data) else None
    exif = info.get("exif") or (tiff_exif(tiff, source) if tiff else None)
    if exif is None and isinstance(info.get("Raw profile type exif"), str):
        # ImageMagick's PNG text chunk (a header of three lines, then hex): Pillow turns the pixels by the orientation
        # in it, so it is EXIF to carry (set upright) like an eXIf chunk's, not to lose silently.
        try:
            exif = bytes.fromhex("".join(info["Raw profile type exif"].split("\n")[3:]))
        except ValueError:
            exif = b""
    while isinstance(exif, bytes) and exif.startswith(EXIF_HEADER):
        # Twice where a PNG's eXIf chunk holds the JPEG header too (some writers' mistake; Pillow reads through it and
        # turns the pixels): the block behind it is whole, and kept.
        exif = exif[len(EXIF_HEADER):]
    if exif is not None:
        upright = upright_exif(exif) if isinstance(exif, bytes) else None
        if upright is None:
            log.warning("%s: its EXIF block is malformed; the output is written without it", source)
        exif = upright
    png = data if data is not None and data.startswith(PNG_SIGNATURE) else None
    jpeg = data if data is not None and data.startswith(b"\xff\xd8") else None
    xmp = _xmp_of(info) or (_tiff_xmp(tiff) if tiff else None)
    segments, density = jpeg_segments.descriptive(jpeg) if jpeg else (None, None)
    return ImageMetadata(icc if isinstance(icc, bytes) else None, exif, png_colour_chunks(png) if png else None,
                         xmp and upright_xmp(xmp, source, turned=orientation != 1), segments, density,
                         png_text_chunks(png) if png else None, tiff_carried_tags(tiff) if tiff else None)


def movable_exif(block: bytes) -> tiff_tags.Directory | None:
    """What of a TIFF-structured ``block`` (an EXIF block, or a TIFF file) moves into another file: its first
    directory's descriptive tags (:data:`_EXIF_DESCRIPTIVE`) with the Exif, GPS and Interoperability directories, the
    maker note left out (:data:`_MAKER_NOTE`); None where the block cannot be walked."""
    order = _byte_order(block)
    if order is None:
        return None
    return tiff_tags.read_directory(block, struct.unpack_from(order + "I", block, 4)[0], order,
                                    frozenset(_SUB_DIRECTORIES), _EXIF_DESCRIPTIVE, frozenset({_MAKER_NOTE}))


def tiff_exif(data: bytes, source: str) -> bytes | None:
    """A TIFF file's EXIF (camera, capture time, exposure, GPS...: :func:`movable_exif` of its own tags) as an EXIF
    block in its byte order, which any output can carry; None where it has none. Before, a TIFF's EXIF reached no
    output, without a word."""
    directory = movable_exif(data)
    if directory is None or not (directory.entries or directory.children):
        return None
    _maker_note_left_out(directory, source, "carried")
    return data[:4] + struct.pack(directory.order + "I", 8) + directory.at(8, directory.order)


def _maker_note_left_out(directory: tiff_tags.Directory, name: str, verb: str) -> None:
    if _MAKER_NOTE in directory.left_out:
        log.warning("%s: the EXIF maker note (the camera maker's private data, whose offsets do not survive a move "
                    "to another file) is not %s", name, verb)


def _tiff_xmp(data: bytes) -> bytes | None:
    """A TIFF file's XMP packet (tag 700, which Pillow does not put in ``info``), or None."""
    found = tiff_tags.read_tags(data, (tiff_tags.XMP,)).get(tiff_tags.XMP)
    return found[2] if found else None


def tiff_carried_tags(data: bytes) -> tuple[tuple[int, int, int, bytes], ...] | None:
    """A TIFF file's IPTC (as UNDEFINED bytes: writers type it LONG, which a byte-order change would scramble),
    Photoshop resources (their thumbnails of the input left out) and print resolution (numbers rewritten in
    little-endian, the order OpenCV writes), each as (tag, type, count, value bytes); None where it has none."""
    order = tiff_tags.byte_order(data)
    found = tiff_tags.read_tags(data, (tiff_tags.IPTC, tiff_tags.PHOTOSHOP, tiff_tags.X_RESOLUTION,
                                       tiff_tags.Y_RESOLUTION, tiff_tags.RESOLUTION_UNIT))
    carried = []
    if tiff_tags.IPTC in found:
        value = found[tiff_tags.IPTC][2]
        carried.append((tiff_tags.IPTC, 7, len(value), value))
    if tiff_tags.PHOTOSHOP in found:
        value = jpeg_segments.without_thumbnails(found[tiff_tags.PHOTOSHOP][2])
        carried.append((tiff_tags.PHOTOSHOP, 1, len(value), value))
    x, y, unit = (found.get(tag) for tag in (tiff_tags.X_RESOLUTION, tiff_tags.Y_RESOLUTION,
                                             tiff_tags.RESOLUTION_UNIT))
    if x and y and unit and x[:2] == y[:2] == (5, 1) and unit[:2] == (3, 1):  # one RATIONAL each, one SHORT
        for tag, (_, _, value) in ((tiff_tags.X_RESOLUTION, x), (tiff_tags.Y_RESOLUTION, y)):
            carried.append((tag, 5, 1, struct.pack("<II", *struct.unpack(order + "II", value))))
        carried.append((tiff_tags.RESOLUTION_UNIT, 3, 1, struct.pack("<H", *struct.unpack(order + "H", unit[2]))))
    return tuple(carried) or None


def _xmp_of(info: dict) -> bytes | None:
    """The XMP packet Pillow read (``info["xmp"]``: JPEG, PNG, WebP, HEIF, AVIF) or ImageMagick's PNG text chunk's,
    None where there is none."""
    xmp = info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if xmp is None and isinstance(info.get("Raw profile type xmp"), str):
        xmp = from_imagemagick_text(info["Raw profile type xmp"])
    return xmp if isinstance(xmp, bytes) and xmp else None


def upright_exif(exif: bytes) -> bytes | None:
    """``exif`` (TIFF-structured) with its first directory's orientation set to 1, or None when that directory
    cannot be walked (a truncated or corrupt block). Everything else, maker notes included, stays byte for byte.

    Every orientation entry there is rewritten in place as one SHORT of 1, whatever it held: readers take a LONG, or
    the first of several values, as the orientation too (Pillow turned the pixels by it), and a reader that takes
    the last of two entries must not find the old value. Any out-of-line values are left unreferenced."""
    order = _byte_order(exif)
    ifd0 = _directory(exif, order, struct.unpack_from(order + "I", exif, 4)[0]) if order else None
    if ifd0 is None:
        return None
    patched = bytearray(exif)
    _set_upright(patched, order, ifd0)
    return bytes(patched)


@dataclass(frozen=True)
class _Directory:
    """One directory (IFD) of an EXIF block: where it starts, and (tag, type, count, offset) of each entry."""

    at: int
    entries: tuple[tuple[int, int, int, int], ...]

    @property
    def end(self) -> int:
        """Where its link to the next directory lies (4 bytes)."""
        return self.at + 2 + 12 * len(self.entries)


def _byte_order(exif: bytes) -> str | None:
    """The struct byte order of a TIFF-structured block (``<`` for II, ``>`` for MM), or None for anything else."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    return "<" if exif[:2] == b"II" else ">"


def _directory(exif: bytes, order: str, at: int) -> _Directory | None:
    """The directory at offset ``at``, or None where its entries do not all lie in ``exif``."""
    if at + 2 > len(exif):
        return None
    (count,) = struct.unpack_from(order + "H", exif, at)
    if at + 2 + 12 * count > len(exif):
        return None
    return _Directory(at, tuple((*struct.unpack_from(order + "HHI", exif, entry), entry)
                                for entry in range(at + 2, at + 2 + 12 * count, 12)))


def _set_entry(block: bytearray, order: str, entry: int, value: int, short: bool) -> None:
    """Rewrite the entry at ``entry`` in place as one SHORT (``short``) or LONG of ``value``, its tag kept."""
    tag, kind, number = struct.unpack_from(order + "HHI", block, entry)
    if short:
        padding = block[entry + 10:entry + 12] if (kind, number) == (_SHORT, 1) else b"\0\0"
        block[entry:entry + 12] = struct.pack(order + "HHIH", tag, _SHORT, 1, value) + padding
    else:
        block[entry:entry + 12] = struct.pack(order + "HHII", tag, _LONG, 1, value)


def _set_upright(block: bytearray, order: str, directory: _Directory) -> None:
    for tag, _, _, entry in directory.entries:
        if tag == _ORIENTATION_TAG:
            _set_entry(block, order, entry, 1, short=True)


def _entry_number(exif: bytes, order: str, kind: int, count: int, entry: int) -> int | None:
    """The value of an entry holding one SHORT or LONG, else None."""
    if count != 1 or kind not in (_SHORT, _LONG):
        return None
    return struct.unpack_from(order + ("H" if kind == _SHORT else "I"), exif, entry + 8)[0]


def _used(exif: bytes, order: str, directories: list[_Directory]) -> list[tuple[int, int]]:
    """(start, end) of the header, of ``directories`` and the directories they point to (Exif, GPS,
    Interoperability), and of every value of theirs that lies outside its entry (a maker note...)."""
    used, seen = [(0, 8)], set()
    while directories:
        directory = directories.pop()
        if directory.at in seen:
            continue
        seen.add(directory.at)
        used.append((directory.at, directory.end + 4))
        for tag, kind, count, entry in directory.entries:
            (value,) = struct.unpack_from(order + "I", exif, entry + 8)
            if _TYPE_BYTES.get(kind, 1) * count > 4:
                used.append((value, value + _TYPE_BYTES.get(kind, 1) * count))
            if tag in _SUB_DIRECTORIES and (sub := _directory(exif, order, value)) is not None:
                directories.append(sub)
    return used


def _overlaps(span: tuple[int, int], used: list[tuple[int, int]]) -> bool:
    return any(start < span[1] and span[0] < end for start, end in used)


def output_exif(exif: bytes, image: np.ndarray, target: str, limit: int | None = None) -> bytes:
    """``exif`` (as :func:`metadata_of` carries it) for an output of pixels ``image`` (BGR(A) or grey, as written):
    its pixel size (PixelXDimension, PixelYDimension) set to ``image``'s and its thumbnail (IFD1's JPEG) made again
    from ``image``, or dropped. ``limit``: the most bytes the block may take
    (a JPEG segment's); ``target`` names the file in the warning given where the thumbnail is dropped.

    Every byte before the old thumbnail stays where it is, so that every offset holds (maker notes keep their own,
    absolute ones): the new thumbnail takes the old one's place where that ends the block (zero padding after it
    aside), else it is appended (the old one's bytes blanked). IFD1's orientation is set to 1 and its offset, length
    and size entries (where present) rewritten in place. The thumbnail fits in the old one's width and height, the
    output's aspect kept. It is dropped (IFD1 unlinked) where IFD1 or the thumbnail lies outside the block or over
    other EXIF data (a value a directory points to), where it is uncompressed, or where the block would not fit in
    ``limit``. A block without a thumbnail (or that cannot be walked) is returned as it is."""
    order = _byte_order(exif)
    ifd0 = _directory(exif, order, struct.unpack_from(order + "I", exif, 4)[0]) if order else None
    if ifd0 is None:
        return exif
    exif = _with_pixel_size(exif, order, ifd0, image.shape[1], image.shape[0])
    if ifd0.end + 4 > len(exif):
        return exif
    (at,) = struct.unpack_from(order + "I", exif, ifd0.end)
    if at == 0:
        return exif
    used = _used(exif, order, [ifd0])
    ifd1 = _directory(exif, order, at)
    if ifd1 is None or _overlaps((ifd1.at, ifd1.end), used):
        return _without_thumbnail(exif, order, ifd0, None, target, "directory lies outside the EXIF block or over "
                                  "its first directory")
    block = bytearray(exif)
    _set_upright(block, order, ifd1)
    tags = {tag: (kind, count, entry) for tag, kind, count, entry in ifd1.entries}
    if _THUMBNAIL_OFFSET not in tags and _THUMBNAIL_LENGTH not in tags:
        if _STRIP_OFFSETS in tags or _TILE_OFFSETS in tags:
            return _without_thumbnail(block, order, ifd0, None, target, "is uncompressed, which is not made again")
        return bytes(block)
    offset, length = (_entry_number(exif, order, *tags.get(tag, (0, 0, 0))) for tag in (_THUMBNAIL_OFFSET,
                                                                                        _THUMBNAIL_LENGTH))
    if offset is None or length is None or not length or offset + length > len(exif):
        return _without_thumbnail(block, order, ifd0, None, target, "lies outside the EXIF block")
    old, used = (offset, offset + length), used + _used(exif, order, [ifd1])
    if _overlaps(old, used):
        return _without_thumbnail(block, order, ifd0, None, target, "overlaps other EXIF data")
    # Last in the block (as cameras write it; a writer's padding after it, zeros nothing points to, counts as none).
    last = not any(exif[old[1]:]) and not _overlaps((old[1], len(exif)), used)
    frame = _jpeg_frame(exif[old[0]:old[1]]) if exif.startswith(b"\xff\xd8", old[0]) else None
    bounds = (frame[1], frame[0]) if frame and frame[0] and frame[1] else _THUMBNAIL_BOUNDS
    if last:
        head = block[:old[0]]  # the new one takes its place
    else:
        head = block[:old[0]] + bytes(length) + block[old[1]:]
        head += bytes(len(head) % 2)  # appended at a word boundary, as TIFF wants
    picture = _thumbnail_picture(image, bounds)
    for quality in _THUMBNAIL_QUALITIES:
        thumbnail = _jpeg_thumbnail(picture, quality)
        if limit is None or len(head) + len(thumbnail) <= limit:
            break
    else:
        bare = _without_thumbnail(block, order, ifd0, old, target, None, last)
        if len(bare) <= limit:  # else too large even without it: the whole block is left out, and embed says so
            log.warning("%s: the input's EXIF thumbnail made again would take the EXIF block over the %d bytes a JPEG "
                        "segment holds; the output is written without it", target, limit)
        return bare
    block = head + thumbnail
    values = {_THUMBNAIL_OFFSET: len(head), _THUMBNAIL_LENGTH: len(thumbnail), _WIDTH: picture.width,
              _LENGTH: picture.height}
    for tag, kind, _, entry in ifd1.entries:
        if tag in values:
            _set_entry(block, order, entry, values[tag], short=kind == _SHORT and tag in (_WIDTH, _LENGTH))
    return bytes(block)


def _with_pixel_size(exif: bytes, order: str, ifd0: _Directory, width: int, height: int) -> bytes:
    """``exif`` with its Exif directory's PixelXDimension and PixelYDimension (where each is one SHORT or LONG) set
    to the output's ``width`` and ``height``, in place: a photo turned upright on read (orientation 5 to 8) had
    them the other way round, and a side-by-side output is twice as wide."""
    pointer = next((entry for tag, _, _, entry in ifd0.entries if tag == _EXIF_DIRECTORY), None)
    directory = _directory(exif, order, struct.unpack_from(order + "I", exif, pointer + 8)[0]) if pointer else None
    if directory is None:
        return exif
    block, values = bytearray(exif), {_PIXEL_X: width, _PIXEL_Y: height}
    for tag, kind, count, entry in directory.entries:
        if tag in values and _entry_number(exif, order, kind, count, entry) is not None:
            _set_entry(block, order, entry, values[tag], short=kind == _SHORT and values[tag] <= 0xFFFF)
    return bytes(block)


def _without_thumbnail(exif: bytes | bytearray, order: str, ifd0: _Directory, old: tuple[int, int] | None,
                       target: str, reason: str | None, last: bool = False) -> bytes:
    """``exif`` with IFD1 unlinked from IFD0, and the thumbnail's bytes (``old``, where they are its own) cut where
    they end the block (``last``), else blanked; a warning naming ``target`` and ``reason`` (None: no warning)."""
    block = bytearray(exif)
    block[ifd0.end:ifd0.end + 4] = bytes(4)
    if old is not None:
        block = block[:old[0]] if last else block[:old[0]] + bytes(old[1] - old[0]) + block[old[1]:]
    if reason:
        log.warning("%s: the input's EXIF thumbnail %s; the output is written without it", target, reason)
    return bytes(block)


def _thumbnail_picture(image: np.ndarray, bounds: tuple[int, int]):
    """``image`` (BGR(A) or grey, 8 or 16 bit or float) as an 8-bit RGB PIL image that fits in ``bounds`` (width,
    height), its aspect kept (never enlarged)."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3] if array.shape[2] >= 3 else array[..., 0]  # alpha left out
    if array.dtype.kind == "f":
        array = np.clip(np.nan_to_num(array) * 255 + 0.5, 0, 255)
    elif array.dtype.itemsize > 1:  # 16-bit: the high byte of each value, read in place
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        array = little[..., None].view(np.uint8)[..., array.dtype.itemsize - 1]
    # Still BGR: its channels are swapped once it is small (a photo's whole took 1.7 s the other way round).
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    scale = min(bounds[0] / picture.width, bounds[1] / picture.height, 1.0)
    size = (min(bounds[0], max(1, round(picture.width * scale))), min(bounds[1], max(1, round(picture.height * scale))))
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if picture.mode == "RGB":
        picture = Image.merge("RGB", picture.split()[::-1])
    return picture.convert("RGB")


def _jpeg_thumbnail(picture, quality: int) -> bytes:
    """``picture`` as an EXIF thumbnail: a baseline JPEG in YCbCr 4:2:2 (Exif's), without APPn segments."""
    import io

    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality, subsampling=1, optimize=False, progressive=False)
    encoded = buffer.getvalue()
    at = 2
    while encoded[at] == 0xFF and 0xE0 <= encoded[at + 1] <= 0xEF:  # Pillow's JFIF header
        at += 2 + struct.unpack_from(">H", encoded, at + 2)[0]
    return encoded[:2] + encoded[at:]


def embed(encoded: bytes, suffix: str, metadata: ImageMetadata, target: str, image: np.ndarray) -> bytes:
    """``encoded`` (a whole PNG, JPEG, TIFF or WebP file, per ``suffix``, of the pixels ``image``) with ``metadata``
    written into it, its EXIF thumbnail made from ``image`` (:func:`output_exif`); other formats are returned as
    they are, with a warning naming ``target`` (the file being written)."""
    if not metadata:
        return encoded
    kind = suffix.lower()
    header = png_header(encoded) if kind == ".png" else None
    if header is not None:
        metadata = _for_output(metadata, image, target, None)
        return _embed_png(encoded, _fitting(metadata, header.colour_channels, target), target)
    if kind in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        metadata = _for_output(metadata, image, target, _SEGMENT_MAX - len(EXIF_HEADER))
        frame = _jpeg_frame(encoded)
        return _embed_jpeg(encoded, _fitting(metadata, frame and frame[2], target), target)
    channels = 1 if image.ndim == 2 or image.shape[2] == 1 else 3
    if kind in (".tif", ".tiff") and tiff_tags.byte_order(encoded) == "<":  # as OpenCV and Pillow write TIFF
        return _embed_tiff(encoded, _fitting(_for_output(metadata, image, target, None), channels, target), target)
    if kind == ".webp" and webp_chunks.is_webp(encoded):
        return _embed_webp(encoded, _fitting(_for_output(metadata, image, target, None), channels, target), target,
                           image)
    colour = bool(metadata.icc_profile or colour_matters(metadata.png_colour))
    _say_not_written(target, [what for what, present in (
        ("colour profile", colour), ("EXIF", metadata.exif), ("XMP", metadata.xmp)) if present]
        + _held_elsewhere(metadata, kind), f"{kind or 'extension-less'} files", f"only {', '.join(CARRYING_SUFFIXES)}")
    return encoded


def _held_elsewhere(metadata: ImageMetadata, output: str) -> list[str]:
    """What ``metadata`` holds in its input format's own form (a JPEG's IPTC, comments and density, a PNG's text
    chunks and pHYs, a TIFF's IPTC, Photoshop resources and resolution) that an ``output`` file ("jpeg", "png",
    "tiff", anything else) cannot hold: named for the one warning :func:`_say_not_written` gives."""
    lost = []
    if output != "jpeg":
        kinds = {marker for marker, _ in jpeg_segments.segments(b"\xff\xd8" + (metadata.jpeg_segments or b""))}
        lost += ["JPEG IPTC"] * (0xED in kinds) + ["JPEG comments"] * (0xFE in kinds)
        lost += ["JPEG print density"] * bool(metadata.jfif_density)
    if output != "png":
        kinds = {kind for kind, _ in split_chunks(metadata.png_text)}
        lost += ["PNG text chunks"] * bool(kinds - {b"pHYs"}) + ["PNG print density (pHYs)"] * (b"pHYs" in kinds)
    if output != "tiff":
        tags = {tag for tag, *_ in metadata.tiff_tags or ()}
        lost += ["TIFF IPTC"] * (tiff_tags.IPTC in tags) + ["TIFF Photoshop resources"] * (tiff_tags.PHOTOSHOP in tags)
        lost += ["TIFF print resolution"] * bool({tiff_tags.X_RESOLUTION, tiff_tags.Y_RESOLUTION} & tags)
    return lost


def _say_not_written(target: str, lost: list[str], files: str, written: str) -> None:
    """One warning naming what the input carried that ``files`` of the output's format cannot hold (``written``:
    what they do hold); that colours may show differently where a profile or colour chunks are among it."""
    if not lost:
        return
    named = f"{', '.join(lost[:-1])} and {lost[-1]} are" if len(lost) > 1 else f"{lost[0]} is"
    colour = "; colours may show differently" if {"colour profile", "colour chunks"} & set(lost) else ""
    log.warning("%s: the input's %s not written into %s (%s)%s", target, named, files, written, colour)


def profile_fits(icc: bytes | None, channels: int) -> bool:
    """Whether the ICC profile ``icc`` describes pixels of ``channels`` (1 grey, 3 colour), by its data colour
    space (:data:`_ICC_CHANNELS`; a signature not known there is not judged): the one rule for files written and
    PIL images returned."""
    return not (icc and len(icc) >= 20) or _ICC_CHANNELS.get(icc[16:20], channels) == channels


def _fitting(metadata: ImageMetadata, channels: int | None, target: str) -> ImageMetadata:
    """``metadata`` without a profile that describes other pixels than the output's ``channels`` (1 grey, 3 colour):
    a grey photo's profile where it is written in colour (serving.client sends grey as colour, a grey photo with
    alpha is read as BGRA), a CMYK JPEG's profile where its pixels were read as RGB. Such a profile would be
    misapplied (PNG decoders reject it), so the output is untagged: shown as sRGB, as those pixels now are."""
    icc = metadata.icc_profile
    if channels is None or profile_fits(icc, channels):
        return metadata
    space = icc[16:20].decode("latin-1").strip()
    log.warning("%s: the input's %s colour profile does not describe the %s pixels written; not written", target,
                space, "grey" if channels == 1 else "colour")
    return replace(metadata, icc_profile=None)


def encoder_metadata(metadata: ImageMetadata, image: np.ndarray, target: str) -> dict:
    """``metadata`` as keyword arguments of an encoder that writes it into the file itself (Pillow's HEIF and AVIF
    writers: ``exif=``, ``icc_profile=``), made for the output ``image`` as :func:`embed` makes it: EXIF with the
    output's pixel size and thumbnail, a profile only where it fits the output's colours."""
    if not metadata:
        return {}
    metadata = _fitting(_for_output(metadata, image, target, None), 1 if image.ndim == 2 else 3, target)
    _say_not_written(target, _held_elsewhere(metadata, "heif") + [what for what, present in (
        ("colour chunks", not metadata.icc_profile and colour_matters(metadata.png_colour)),) if present],
        f"{os.path.splitext(target)[1] or 'HEIF'} files", "their profile, EXIF and XMP are")
    carried = {"exif": EXIF_HEADER + metadata.exif} if metadata.exif else {}
    carried |= {"xmp": metadata.xmp} if metadata.xmp else {}
    return carried | ({"icc_profile": metadata.icc_profile} if metadata.icc_profile else {})


def _for_output(metadata: ImageMetadata, image: np.ndarray, target: str, limit: int | None) -> ImageMetadata:
    """``metadata`` made true of the output ``image``: EXIF by :func:`output_exif` (``limit``: the most bytes its
    block may take), XMP by :func:`runtime.image_xmp.output_xmp`."""
    exif = output_exif(metadata.exif, image, target, limit) if metadata.exif else None
    xmp = output_xmp(metadata.xmp, image.shape[1], image.shape[0], target) if metadata.xmp else None
    return replace(metadata, exif=exif, xmp=xmp)


def _jpeg_frame(encoded: bytes) -> tuple[int, int, int] | None:
    """Height, width and colour components (1 grey, 3 colour) of a JPEG file from its frame header (SOF), or
    None."""
    for marker, payload in jpeg_segments.segments(encoded):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn; not DHT, JPG, DAC
            return (*struct.unpack_from(">HH", payload, 1), payload[5]) if len(payload) >= 6 else None
    return None


def _embed_png(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """The colour chunks, iCCP (name, compression method 0, zlib data), eXIf, pHYs and text chunks and XMP (iTXt,
    uncompressed) right after IHDR: the colour chunks, eXIf and pHYs must precede PLTE and IDAT (PNG 3rd ed.)."""
    end_of_header = 8 + 4 + 4 + 13 + 4
    chunks = b""
    icc = metadata.icc_profile
    if icc and len(icc) > PNG_PROFILE_MAX:
        # Pillow (and so our own reader's default) refuses to open such a PNG at all: the file must stay readable.
        log.warning("%s: the input's colour profile (%d bytes) is larger than PNG readers take (%d); not written",
                    target, len(icc), PNG_PROFILE_MAX)
        icc = None
    _say_not_written(target, _held_elsewhere(metadata, "png"), "PNG files",
                     "their profile, EXIF, XMP and a PNG's own text chunks and pHYs are")
    for kind, chunk in split_chunks(metadata.png_colour):
        if not (icc and kind == b"sRGB"):  # sRGB and iCCP together are forbidden: the profile is the one kept
            chunks += chunk
    if icc:
        chunks += make_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if metadata.exif:
        chunks += make_chunk(b"eXIf", metadata.exif)
    chunks += metadata.png_text or b""
    if metadata.xmp:  # keyword, no compression (flag and method 0), no language, no translated keyword
        chunks += make_chunk(b"iTXt", XMP_PNG_KEYWORD + b"\x00\x00\x00\x00\x00" + metadata.xmp)
    return encoded[:end_of_header] + chunks + encoded[end_of_header:]


def _embed_webp(encoded: bytes, metadata: ImageMetadata, target: str, image: np.ndarray) -> bytes:
    """The ICC profile, EXIF and XMP in WebP's extended format (:func:`runtime.webp_chunks.with_metadata`); a JPEG's
    IPTC and comments and a PNG's text and colour chunks have no place there (a warning names them)."""
    _say_not_written(target, _held_elsewhere(metadata, "webp") + [what for what, present in (
        ("colour chunks", not metadata.icc_profile and colour_matters(metadata.png_colour)),) if present],
        "WebP files", "their profile, EXIF and XMP are")
    alpha = image.ndim == 3 and image.shape[2] == 4
    return webp_chunks.with_metadata(encoded, image.shape[1], image.shape[0], alpha, metadata.icc_profile,
                                     metadata.exif, metadata.xmp)


def _embed_tiff(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """The ICC profile, XMP, EXIF (:func:`movable_exif`: its descriptive tags and the Exif and GPS directories; no
    thumbnail, which would be a second page) and a TIFF input's IPTC, Photoshop resources and print resolution as
    tags of the TIFF's first directory (:func:`runtime.tiff_tags.with_tags`); a PNG's colour chunks and a JPEG's or
    PNG's text are not written into TIFF files here (a warning names them)."""
    exif = movable_exif(metadata.exif) if metadata.exif else None
    if exif is not None:
        _maker_note_left_out(exif, target, "written into TIFF files")
    tags = {tag: (kind, count, value) for tag, kind, count, value in metadata.tiff_tags or ()}
    if metadata.icc_profile:
        tags[tiff_tags.ICC_PROFILE] = (7, len(metadata.icc_profile), metadata.icc_profile)
    if metadata.xmp:
        tags[tiff_tags.XMP] = (1, len(metadata.xmp), metadata.xmp)
    _say_not_written(target, _held_elsewhere(metadata, "tiff") + [what for what, present in (
        ("colour chunks", not metadata.icc_profile and colour_matters(metadata.png_colour)),) if present],
        "TIFF files", "their profile, EXIF, XMP and a TIFF's own IPTC and resolution are")
    return tiff_tags.with_tags(encoded, tags, exif)


def _embed_jpeg(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """APP1 Exif, APP1 XMP, APP2 ICC_PROFILE (split into numbered segments of at most 64 KiB), then the input's APP13
    and COM segments after SOI and any APP0 (whose JFIF density is set to the input's)."""
    encoded = jpeg_segments.with_density(encoded, metadata.jfif_density)
    at = 2
    while encoded[at:at + 2] == b"\xff\xe0":  # JFIF / JFXX headers stay first, as JFIF requires
        at += 2 + struct.unpack_from(">H", encoded, at + 2)[0]
    segments = b""
    if colour_matters(metadata.png_colour) and not metadata.icc_profile:
        log.warning("%s: the input PNG's colour chunks (gamma, primaries) are not written into JPEG files; colours "
                    "may show differently", target)
    _say_not_written(target, _held_elsewhere(metadata, "jpeg"), "JPEG files",
                     "their profile, EXIF, XMP and a JPEG's own IPTC, comments and density are")
    if metadata.exif:
        if len(EXIF_HEADER) + len(metadata.exif) > _SEGMENT_MAX:
            log.warning("%s: the input's EXIF block (%d bytes) is larger than one JPEG segment holds; not written",
                        target, len(metadata.exif))
        else:
            segments += jpeg_segments.segment(0xE1, EXIF_HEADER + metadata.exif)
    if metadata.xmp:
        if len(XMP_JPEG_HEADER) + len(metadata.xmp) > _SEGMENT_MAX:  # extended XMP would be needed: not written
            log.warning("%s: the input's XMP metadata (%d bytes) is larger than one JPEG segment holds; not written",
                        target, len(metadata.xmp))
        else:
            segments += jpeg_segments.segment(0xE1, XMP_JPEG_HEADER + metadata.xmp)
    if metadata.icc_profile:
        room = _SEGMENT_MAX - len(_ICC_HEADER) - 2
        parts = [metadata.icc_profile[i:i + room] for i in range(0, len(metadata.icc_profile), room)]
        if len(parts) > 255:
            log.warning("%s: the input's colour profile (%d bytes) is larger than JPEG can hold; not written",
                        target, len(metadata.icc_profile))
        else:
            for number, part in enumerate(parts, start=1):
                segments += jpeg_segments.segment(0xE2, _ICC_HEADER + bytes((number, len(parts))) + part)
    segments += metadata.jpeg_segments or b""
    return encoded[:at] + segments + encoded[at:]

