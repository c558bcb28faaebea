"""A photo's colour profile (ICC) and camera metadata (EXIF), carried from the input file to its deblurred output.

Why: the network works on the stored pixel values, in whatever colour space the file declares, so the output
only *looks* like the input where it carries the input's ICC profile: a Display P3 or Adobe RGB photo written
without it is shown as sRGB, its colours dull or shifted, a silent change users see and we would not. EXIF
(capture time, camera, lens, GPS) is what anyone expects a photo tool to keep (``--strip-metadata`` drops both).

Both are copied byte for byte, except EXIF's orientation tag, which is set to 1 (upright): the pixels were turned
upright when they were read (:func:`runtime.images.read_image`), so the old value would turn them a second time.
EXIF whose first directory cannot be walked is dropped, with a warning: its orientation could not be reset. A PNG
input's colour chunks (cICP, sRGB, gAMA, cHRM: how its values map to colours where it has no profile) go into PNG
outputs the same way. A profile whose colour space does not fit the output (a grey profile on colour pixels, a
CMYK profile on the RGB pixels a CMYK JPEG is read as) is dropped, with a warning: it would misdescribe them.

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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TAG = 0x0112
_SHORT = 3
#: PNG chunks that say how an image's values map to colours where it has no ICC profile, with their data's length:
#: carried whole (PNG 3rd ed.: all before PLTE and IDAT; iCCP, when written, overrides sRGB, which is then left out).
_PNG_COLOUR_CHUNKS = {b"cICP": 4, b"sRGB": 1, b"gAMA": 4, b"cHRM": 32}
#: gAMA of sRGB (1/2.2 x 100000): a PNG with only this and sRGB shows as any untagged file does.
_SRGB_GAMMA = struct.pack(">I", 45455)
#: Largest profile written into a PNG: Pillow refuses to open a PNG whose iCCP holds more (its MAX_TEXT_CHUNK).
PNG_PROFILE_MAX = 1024 * 1024
#: Decoded channels (1 grey, 3 colour) an ICC profile describes, by its data colour space (bytes 16-19 of its
#: header). Decoders give back grey or RGB: a space of other values (CMYK, as a CMYK JPEG's profile, CMY, HSV...)
#: describes neither (0). Lab and XYZ data is three values too and is left as it is (libpng warns that a PNG wants
#: RGB). A signature not known here (not an ICC profile at all) is not judged.
_ICC_CHANNELS = {b"GRAY": 1, b"RGB ": 3, b"Lab ": 3, b"XYZ ": 3,
                 **dict.fromkeys([b"CMYK", b"CMY ", b"HSV ", b"HLS ", b"YCbr", b"Luv ", b"Yxy "], 0),
                 **{b"%XCLR" % n: 0 for n in range(2, 16)}}
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
    #: A PNG input's colour chunks (cICP, sRGB, gAMA, cHRM), whole and in order, or None.
    png_colour: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.icc_profile or self.exif or self.png_colour)


NO_METADATA = ImageMetadata()


def metadata_of(info: dict, source: str, png: bytes | None = None) -> ImageMetadata:
    """The metadata of an image Pillow opened (its ``info``), with EXIF's orientation set upright.

    ``source`` names the file in the warning given when its EXIF cannot be walked (then only the profile is kept).
    ``png``: the whole file where it is a PNG, whose colour chunks are carried too (Pillow keeps only their values).
    TIFF files keep their EXIF in the image's own tags, which describe the stored pixels: they are not carried.
    """
    icc = info.get("icc_profile") or None
    exif = info.get("exif") or None
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
    return ImageMetadata(icc if isinstance(icc, bytes) else None, exif, png_colour_chunks(png) if png else None)


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
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", data, 16)
    return PngHeader(width, height, bit_depth, colour_type)


def png_chunks(data: bytes):
    """(type, start, end) of each whole chunk of a PNG file, in order, up to IEND or the first that does not fit in
    ``data``: only the lengths are read, so a decompression bomb's image data costs nothing."""
    if not data.startswith(_PNG_SIGNATURE):
        return
    at = len(_PNG_SIGNATURE)
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
        if _PNG_COLOUR_CHUNKS.get(kind) == end - start - 12 and _png_chunk_intact(data, start, end):
            found += data[start:end]
    return found or None


def upright_exif(exif: bytes) -> bytes | None:
    """``exif`` (TIFF-structured) with its first directory's orientation set to 1, or None when that directory
    cannot be walked (a truncated or corrupt block). Everything else, maker notes included, stays byte for byte.

    Every orientation entry there is rewritten in place as one SHORT of 1, whatever it held: readers take a LONG, or
    the first of several values, as the orientation too (Pillow turned the pixels by it), and a reader that takes
    the last of two entries must not find the old value. Any out-of-line values are left unreferenced."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", exif, 4)
    if ifd + 2 > len(exif):
        return None
    (count,) = struct.unpack_from(order + "H", exif, ifd)
    if ifd + 2 + 12 * count > len(exif):
        return None
    patched = bytearray(exif)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", exif, entry)
        if tag == _ORIENTATION_TAG:
            padding = exif[entry + 10:entry + 12] if (kind, number) == (_SHORT, 1) else b"\0\0"
            patched[entry:entry + 12] = struct.pack(order + "HHIH", tag, _SHORT, 1, 1) + padding
    return bytes(patched)


def embed(encoded: bytes, suffix: str, metadata: ImageMetadata, target: str) -> bytes:
    """``encoded`` (a whole PNG or JPEG file, per ``suffix``) with ``metadata`` written into it; other formats are
    returned as they are, with a warning naming ``target`` (the file being written)."""
    if not metadata:
        return encoded
    kind = suffix.lower()
    header = png_header(encoded) if kind == ".png" else None
    if header is not None:
        return _embed_png(encoded, _fitting(metadata, header.colour_channels, target), target)
    if kind in (".jpg", ".jpeg") and encoded.startswith(b"\xff\xd8"):
        return _embed_jpeg(encoded, _fitting(metadata, _jpeg_components(encoded), target), target)
    if metadata.icc_profile or metadata.exif or _png_colour_matters(metadata.png_colour):
        log.warning("%s: the input's colour profile and EXIF are not written into %s files (only %s); colours may "
                    "show differently", target, kind or "extension-less", ", ".join(CARRYING_SUFFIXES))
    return encoded


def _fitting(metadata: ImageMetadata, channels: int | None, target: str) -> ImageMetadata:
    """``metadata`` without a profile that describes other pixels than the output's ``channels`` (1 grey, 3 colour):
    a grey photo's profile where it is written in colour (serving.client sends grey as colour, a grey photo with
    alpha is read as BGRA), a CMYK JPEG's profile where its pixels were read as RGB. Such a profile would be
    misapplied (PNG decoders reject it), so the output is untagged: shown as sRGB, as those pixels now are."""
    icc = metadata.icc_profile
    fits = _ICC_CHANNELS.get(icc[16:20], channels) if icc and len(icc) >= 20 else channels
    if channels is None or fits == channels:
        return metadata
    space = icc[16:20].decode("latin-1").strip()
    log.warning("%s: the input's %s colour profile does not describe the %s pixels written; not written", target,
                space, "grey" if channels == 1 else "colour")
    return ImageMetadata(None, metadata.exif, metadata.png_colour)


def _jpeg_components(encoded: bytes) -> int | None:
    """The colour components of a JPEG file (1 grey, 3 colour) from its frame header (SOF), or None."""
    at = 2
    while at + 4 <= len(encoded) and encoded[at] == 0xFF:
        marker, (length,) = encoded[at + 1], struct.unpack_from(">H", encoded, at + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn; not DHT, JPG, DAC
            return encoded[at + 9] if at + 9 < len(encoded) else None
        at += 2 + length
    return None


def _split_chunks(chunks: bytes | None) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk in ``chunks`` (PNG chunks one after another, as :func:`png_colour_chunks`
    gives them)."""
    whole = _PNG_SIGNATURE + (chunks or b"")
    return [(kind, whole[start:end]) for kind, start, end in png_chunks(whole)]


def _png_colour_matters(chunks: bytes | None) -> bool:
    """Whether PNG colour chunks say anything an untagged file does not: more than sRGB, or sRGB's own gamma."""
    return any(kind != b"sRGB" and not (kind == b"gAMA" and chunk[8:12] == _SRGB_GAMMA)
               for kind, chunk in _split_chunks(chunks))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _embed_png(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """The colour chunks, iCCP (name, compression method 0, zlib data) and eXIf right after IHDR: all must precede
    PLTE and IDAT (PNG 3rd ed.)."""
    end_of_header = 8 + 4 + 4 + 13 + 4
    chunks = b""
    icc = metadata.icc_profile
    if icc and len(icc) > PNG_PROFILE_MAX:
        # Pillow (and so our own reader's default) refuses to open such a PNG at all: the file must stay readable.
        log.warning("%s: the input's colour profile (%d bytes) is larger than PNG readers take (%d); not written",
                    target, len(icc), PNG_PROFILE_MAX)
        icc = None
    for kind, chunk in _split_chunks(metadata.png_colour):
        if not (icc and kind == b"sRGB"):  # sRGB and iCCP together are forbidden: the profile is the one kept
            chunks += chunk
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if metadata.exif:
        chunks += _png_chunk(b"eXIf", metadata.exif)
    return encoded[:end_of_header] + chunks + encoded[end_of_header:]


def _embed_jpeg(encoded: bytes, metadata: ImageMetadata, target: str) -> bytes:
    """APP1 Exif then APP2 ICC_PROFILE (split into numbered segments of at most 64 KiB) after SOI and any APP0."""
    at = 2
    while encoded[at:at + 2] == b"\xff\xe0":  # JFIF / JFXX headers stay first, as JFIF requires
        at += 2 + struct.unpack_from(">H", encoded, at + 2)[0]
    segments = b""
    if _png_colour_matters(metadata.png_colour) and not metadata.icc_profile:
        log.warning("%s: the input PNG's colour chunks (gamma, primaries) are not written into JPEG files; colours "
                    "may show differently", target)
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
