"""A PNG file's chunks: walked from their lengths alone, and those an output carries found (colour, EXIF, print
density, text) or made (:mod:`runtime.image_metadata` writes them after encoding).

Why here, apart: the walk reads only each chunk's length and type, so a decompression bomb's image data costs
nothing, a file cut short is found before libpng prints its own error, and an eXIf after the image data is found
without decoding a pixel (Pillow finds it only by decoding every one).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from runtime.image_xmp import PNG_KEYWORD as XMP_PNG_KEYWORD

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that say how an image's values map to colours where it has no ICC profile, with their data's length:
#: carried whole (PNG 3rd ed.: all before PLTE and IDAT; iCCP, when written, overrides sRGB, which is then left out).
COLOUR_CHUNKS = {b"cICP": 4, b"sRGB": 1, b"gAMA": 4, b"cHRM": 32}
#: gAMA of sRGB (1/2.2 x 100000): a PNG with only this and sRGB shows as any untagged file does.
SRGB_GAMMA = struct.pack(">I", 45455)
#: Largest profile written into a PNG: Pillow refuses to open a PNG whose iCCP holds more (its MAX_TEXT_CHUNK).
PNG_PROFILE_MAX = 1024 * 1024
#: PNG text chunks carried as EXIF or XMP instead (made true of the output there), not copied as text.
TEXT_CARRIED_ELSEWHERE = (b"Raw profile type exif", b"Raw profile type APP1", b"Raw profile type xmp",
                          XMP_PNG_KEYWORD)
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


@dataclass(frozen=True)
class PngHeader:
    """A PNG file's IHDR: its size, bit depth and colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA)."""

    width: int
    height: int
    bit_depth: int
    colour_type: int

    @property
    def colour_channels(self) -> int:
        """Colour channels its pixels hold: 3 for RGB, palette and RGBA, 1 for grey (with or without alpha)."""
        return 3 if self.colour_type & 2 else 1


def png_header(data: bytes) -> PngHeader | None:
    """The IHDR of ``data`` when it starts as a PNG file does (signature, then IHDR first), else None: read from
    the bytes alone, so it holds where a decoder refuses the file."""
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", data, 16)
    return PngHeader(width, height, bit_depth, colour_type)


def png_chunks(data: bytes):
    """(type, start, end) of each whole chunk of a PNG file, in order, up to IEND or the first that does not fit in
    ``data``: only the lengths are read, so a decompression bomb's image data costs nothing."""
    if not data.startswith(PNG_SIGNATURE):
        return
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        end = at + 12 + length
        if end > len(data):
            return
        kind = data[at + 4:at + 8]
        yield kind, at, end
        if kind == b"IEND":
            return
        at = end


def png_grey_transparent(data: bytes) -> int | None:
    """The transparent grey level of a grey PNG with a tRNS chunk, on the scale decoders give (1, 2 and 4-bit
    levels stretched to 8 bits, 8 and 16 bits as they are); None for any other file."""
    header = png_header(data)
    if header is None or header.colour_type != 0:
        return None
    for kind, start, end in png_chunks(data):
        if kind == b"tRNS" and end - start >= 14:
            (level,) = struct.unpack_from(">H", data, start + 8)
            depth = header.bit_depth
            if depth < 8:
                level = (level & ((1 << depth) - 1)) * (255 // ((1 << depth) - 1))
            return level
        if kind == b"IDAT":  # tRNS comes before the image data
            return None
    return None


#: Adam7's passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
#: Samples per pixel of each colour type.
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_data_short(data: bytes) -> tuple[int, int] | None:
    """(rows' bytes the image data holds, bytes its size needs) where a PNG's compressed image data (its IDAT
    chunks, inflated) holds fewer bytes than its header's size needs, else None. OpenCV (libpng) decodes such a
    file, rows past the data as black, and says so only on stderr ("libpng error: Not enough image data"): a
    damaged photo was deblurred without a word. Inflated without keeping the pixels (a fraction of the decode)."""
    header = png_header(data)
    samples = _SAMPLES.get(header.colour_type) if header is not None else None
    if samples is None or len(data) < 29:
        return None
    bits = header.bit_depth * samples

    def row_bytes(columns: int) -> int:
        return 1 + (columns * bits + 7) // 8  # the filter byte, then the samples

    if data[28] == 1:  # Adam7: seven passes of smaller images
        needed = 0
        for x0, y0, dx, dy in _ADAM7:
            columns, rows = -(-(header.width - x0) // dx), -(-(header.height - y0) // dy)
            needed += rows * row_bytes(columns) if columns > 0 and rows > 0 else 0
    else:
        needed = header.height * row_bytes(header.width)
    inflate, held = zlib.decompressobj(), 0
    try:
        for kind, start, end in png_chunks(data):
            if kind != b"IDAT":
                continue
            pending = data[start + 8:end - 4]
            while pending and held < needed:
                held += len(inflate.decompress(pending, 1 << 20))
                pending = inflate.unconsumed_tail
            if held >= needed:
                return None
        held += len(inflate.flush())
    except zlib.error:
        pass  # damaged data: what inflated before it is all there is
    return (held, needed) if held < needed else None


def png_cut_short(data: bytes) -> bool:
    """Whether ``data`` is a PNG file that ends before its IEND chunk (a copy cut short, a download still running):
    libpng prints its own error line on stderr for it, so it is refused from the chunk lengths before decoding."""
    kinds = [kind for kind, _, _ in png_chunks(data)]
    return data.startswith(PNG_SIGNATURE) and kinds[-1:] != [b"IEND"]


def _png_chunk_intact(data: bytes, start: int, end: int) -> bool:
    return zlib.crc32(data[start + 4:end - 4]) & 0xFFFFFFFF == struct.unpack_from(">I", data, end - 4)[0]


def png_exif(data: bytes) -> bytes | None:
    """The data of a PNG file's first intact eXIf chunk wherever it is (after the image data too, where Pillow finds
    it only by decoding every pixel), or None."""
    for kind, start, end in png_chunks(data):
        if kind == b"eXIf" and _png_chunk_intact(data, start, end):
            return data[start + 8:end - 4]
    return None


def png_colour_chunks(data: bytes) -> bytes | None:
    """The intact colour chunks (cICP, sRGB, gAMA, cHRM) before a PNG file's image data, whole, or None."""
    found = b""
    for kind, start, end in png_chunks(data):
        if kind in (b"IDAT", b"PLTE"):
            break
        if COLOUR_CHUNKS.get(kind) == end - start - 12 and _png_chunk_intact(data, start, end):
            found += data[start:end]
    return found or None


def png_text_chunks(data: bytes) -> bytes | None:
    """The intact pHYs (print density) and text chunks (tEXt, zTXt, iTXt; before or after the image data) of a PNG
    file, whole and in order, or None: not those carried as EXIF or XMP (:data:`TEXT_CARRIED_ELSEWHERE`)."""
    found = b""
    for kind, start, end in png_chunks(data):
        keyword = data[start + 8:end - 4].split(b"\x00", 1)[0]
        wanted = kind == b"pHYs" or (kind in TEXT_CHUNKS and keyword not in TEXT_CARRIED_ELSEWHERE)
        if wanted and _png_chunk_intact(data, start, end):
            found += data[start:end]
    return found or None


def split_chunks(chunks: bytes | None) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk in ``chunks`` (PNG chunks one after another, as :func:`png_colour_chunks`
    gives them)."""
    whole = PNG_SIGNATURE + (chunks or b"")
    return [(kind, whole[start:end]) for kind, start, end in png_chunks(whole)]


def colour_matters(chunks: bytes | None) -> bool:
    """Whether PNG colour chunks say anything an untagged file does not: more than sRGB, or sRGB's own gamma."""
    return any(kind != b"sRGB" and not (kind == b"gAMA" and chunk[8:12] == SRGB_GAMMA)
               for kind, chunk in split_chunks(chunks))


def make_chunk(kind: bytes, data: bytes) -> bytes:
    """A whole chunk: length, type, ``data``, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
