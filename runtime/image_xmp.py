"""A photo's XMP packet (Adobe's XML metadata: captions, keywords, ratings, rights, a phone's camera notes), carried
to its output with what would be false about the output changed.

Why: XMP is where photo libraries and editors keep what people wrote about a photo (Lightroom's keywords and
ratings, a caption, a copyright line); a tool that drops it loses their work. Three things in it describe the input
file, not the output, and are edited, byte for byte everything else:

- ``tiff:Orientation`` is set to 1 where the pixels were turned upright when read (Pillow reads it where EXIF has
  none, :func:`runtime.images.read_image`): left as it was, viewers would turn the upright output a second time.
- ``exif:PixelXDimension``/``exif:PixelYDimension`` and ``tiff:ImageWidth``/``tiff:ImageLength`` get the
  output's size (turned upright, a portrait photo's width and height swap; a side-by-side output is twice as wide).
- What points at data stored beside the picture, which the output does not hold, is removed, with a warning naming
  what is lost: a motion photo's video (Google's ``GCamera:MotionPhoto``/``MicroVideo``, the ``Container:Directory``
  of items appended to the JPEG), an Ultra HDR photo's gain map (``hdrgm``: the output shows as SDR), a depth map or
  original picture in extended XMP (``GDepth``, ``GImage``, ``xmpNote:HasExtendedXMP``). Left in, viewers would read
  the deblurred photo's bytes as a video or a gain map.

The edits are made on the packet's text, found by the namespace each prefix is bound to (not by the prefix alone),
in attribute (``tiff:Orientation="6"``) and element (``<tiff:Orientation>6</tiff:Orientation>``) form; a packet in
which a property to edit is still found afterwards, or that is not XMP at all, is dropped, with a warning.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

#: The XMP packet's header in a JPEG APP1 segment.
JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
#: The keyword of a PNG iTXt chunk holding the XMP packet.
PNG_KEYWORD = b"XML:com.adobe.xmp"

_TIFF = b"http://ns.adobe.com/tiff/1.0/"
_EXIF = b"http://ns.adobe.com/exif/1.0/"
_CAMERA = b"http://ns.google.com/photos/1.0/camera/"
_CONTAINER = b"http://ns.google.com/photos/1.0/container/"
_GAIN_MAP = b"http://ns.adobe.com/hdr-gain-map/1.0/"
_DEPTH = b"http://ns.google.com/photos/1.0/depthmap/"
_IMAGE = b"http://ns.google.com/photos/1.0/image/"
_NOTE = b"http://ns.adobe.com/xmp/note/"

#: (namespace, property names or None for every property of it, what the output loses) removed from every packet.
_DETACHED = (
    (_CAMERA, (b"MotionPhoto", b"MotionPhotoVersion", b"MotionPhotoPresentationTimestampUs", b"MicroVideo",
               b"MicroVideoVersion", b"MicroVideoOffset", b"MicroVideoPresentationTimestampUs"), "motion photo video"),
    (_CONTAINER, (b"Directory",), "items appended to the picture"),
    (_GAIN_MAP, None, "HDR gain map, so the output shows as SDR"),
    (_DEPTH, None, "depth map"),
    (_IMAGE, None, "original picture stored beside it"),
    (_NOTE, (b"HasExtendedXMP",), "extended XMP"),
)


def upright_xmp(packet: bytes, source: str, turned: bool) -> bytes | None:
    """``packet`` with ``tiff:Orientation`` set to 1 where the pixels were ``turned`` upright when read, or None
    (with a warning naming ``source``) where it is not XMP or an orientation is left that could not be set."""
    if not _is_xmp(packet):
        log.warning("%s: its XMP metadata is not an XMP packet; the output is written without it", source)
        return None
    if not turned:
        return packet
    edited = _set_values(packet, _TIFF, b"Orientation", b"1")
    if any(value != b"1" for value in _values(edited, _TIFF, b"Orientation")):
        log.warning("%s: the orientation in its XMP metadata could not be set upright; the output is written "
                    "without its XMP", source)
        return None
    return edited


def output_xmp(packet: bytes, width: int, height: int, target: str) -> bytes | None:
    """``packet`` (as :func:`upright_xmp` or the reader carries it) for an output ``width`` x ``height`` pixels
    written to ``target``: its pixel sizes set to those, what points at data beside the input's picture removed (one
    warning naming what is lost), or None (with a warning) where a property to edit is still found afterwards."""
    edited = packet
    for name, value in ((b"PixelXDimension", width), (b"PixelYDimension", height)):
        edited = _set_values(edited, _EXIF, name, str(value).encode())
    for name, value in ((b"ImageWidth", width), (b"ImageLength", height)):
        edited = _set_values(edited, _TIFF, name, str(value).encode())
    lost = []
    for namespace, names, what in _DETACHED:
        trimmed = _remove(edited, namespace, names)
        if trimmed != edited and what not in lost:
            lost.append(what)
        edited = trimmed
    left = [what for namespace, names, what in _DETACHED if _found(edited, namespace, names)]
    sizes = {(_EXIF, b"PixelXDimension"): width, (_EXIF, b"PixelYDimension"): height, (_TIFF, b"ImageWidth"): width,
             (_TIFF, b"ImageLength"): height}
    if left or any(found != str(size).encode() for (namespace, name), size in sizes.items()
                   for found in _values(edited, namespace, name)):
        log.warning("%s: the input's XMP metadata could not be made true of the output (%s); not written", target,
                    ", ".join(left) or "pixel size")
        return None
    directory = _DETACHED[1][2]
    if len(lost) > 1 and directory in lost:  # the directory lists the items named beside it
        lost.remove(directory)
    if lost:
        log.warning("%s: written without what the input's XMP points at beside its picture (%s): the output holds "
                    "only the deblurred photo", target, "; ".join(lost))
    return edited


def from_imagemagick_text(text: str) -> bytes | None:
    """The XMP packet of ImageMagick's PNG text chunk "Raw profile type xmp" (three header lines, then hex), or
    None where the hex does not parse."""
    try:
        return bytes.fromhex("".join(text.split("\n")[3:]))
    except ValueError:
        return None


def _is_xmp(packet: bytes) -> bool:
    return b"http://www.w3.org/1999/02/22-rdf-syntax-ns#" in packet or b"adobe:ns:meta/" in packet


def _prefixes(packet: bytes, namespace: bytes) -> list[bytes]:
    """The prefixes bound to ``namespace`` anywhere in ``packet`` (writers bind the usual ones; any other counts)."""
    pattern = rb"xmlns:([A-Za-z_][\w.-]*)\s*=\s*([\"'])" + re.escape(namespace) + rb"\2"
    return sorted({match[1] for match in re.finditer(pattern, packet)})


def _attribute(prefix: bytes, name: bytes) -> re.Pattern:
    """``prefix:name="value"`` as an attribute: group 1 the text before the value, 3 the value."""
    return re.compile(rb"(\s+" + re.escape(prefix + b":" + name) + rb"\s*=\s*([\"']))(.*?)\2", re.S)


def _element(prefix: bytes, name: bytes) -> re.Pattern:
    """``<prefix:name ...>value</prefix:name>`` or ``<prefix:name .../>``: group 1 the start tag, 2 the value."""
    tag = re.escape(prefix + b":" + name)
    return re.compile(rb"(<" + tag + rb"(?:\s[^<>]*)?(?<!/)>)(.*?)</" + tag + rb"\s*>|<" + tag + rb"(?:\s[^<>]*)?/>",
                      re.S)


def _values(packet: bytes, namespace: bytes, name: bytes) -> list[bytes]:
    """Every value of the property ``name`` of ``namespace``, stripped of surrounding white space."""
    found = []
    for prefix in _prefixes(packet, namespace):
        found += [match[3].strip() for match in _attribute(prefix, name).finditer(packet)]
        found += [(match[2] or b"").strip() for match in _element(prefix, name).finditer(packet)]
    return found


def _set_values(packet: bytes, namespace: bytes, name: bytes, value: bytes) -> bytes:
    """``packet`` with every simple value of the property ``name`` of ``namespace`` replaced by ``value``."""
    for prefix in _prefixes(packet, namespace):
        packet = _attribute(prefix, name).sub(lambda m: m[1] + value + m[2], packet)
        packet = _element(prefix, name).sub(
            lambda m: m[0] if m[1] is None or b"<" in m[2] else m[1] + value + m[0][len(m[1]) + len(m[2]):], packet)
    return packet


def _names(packet: bytes, prefix: bytes, names: tuple[bytes, ...] | None) -> list[bytes]:
    """``names``, or where None every property name used with ``prefix`` in ``packet``."""
    if names is not None:
        return list(names)
    used = re.finditer(rb"[\s<]" + re.escape(prefix) + rb":([A-Za-z_][\w.-]*)", packet)
    return sorted({match[1] for match in used})


def _remove(packet: bytes, namespace: bytes, names: tuple[bytes, ...] | None) -> bytes:
    """``packet`` without the properties ``names`` of ``namespace`` (all of its properties where None), in attribute
    and element form."""
    for prefix in _prefixes(packet, namespace):
        for name in _names(packet, prefix, names):
            packet = _attribute(prefix, name).sub(b"", packet)
            packet = _element(prefix, name).sub(b"", packet)
    return packet


def _found(packet: bytes, namespace: bytes, names: tuple[bytes, ...] | None) -> bool:
    """Whether a property ``names`` of ``namespace`` (any where None) is still used in ``packet``."""
    return any(re.search(rb"[\s<]" + re.escape(prefix) + rb":" + (re.escape(name) if name else rb"[A-Za-z_][\w.-]*")
                         + rb"[\s=>/]", packet)
               for prefix in _prefixes(packet, namespace) for name in (names or (None,)))
