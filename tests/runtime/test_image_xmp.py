"""A photo's XMP (captions, keywords, ratings) reaches its output, made true of it: orientation upright, the output's
pixel size, no motion photo video or HDR gain map claimed that the output does not hold."""

import logging
import re

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from runtime.cli import main
from runtime.image_metadata import ImageMetadata, encoder_metadata
from runtime.image_xmp import output_xmp, upright_xmp
from runtime.images import read_image, read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image

_NAMESPACES = ('xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
               'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"')


def _packet(properties: str = 'tiff:Orientation="6"', body: str = "", namespaces: str = _NAMESPACES) -> bytes:
    """An XMP packet as Lightroom or a phone writes one: a keyword and a rating, and ``properties``/``body``."""
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            f'<rdf:Description rdf:about="" {namespaces}\n xmp:Rating="4" {properties}>\n'
            f'<dc:subject><rdf:Bag><rdf:li>harbour at dawn</rdf:li></rdf:Bag></dc:subject>\n{body}\n'
            f'</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>').encode()


#: A Pixel phone's motion photo with an Ultra HDR gain map: the video and the gain map are appended to its JPEG.
_MOTION_HDR = _packet(
    'tiff:Orientation="6" exif:PixelXDimension="56" exif:PixelYDimension="40" hdrgm:Version="1.0" '
    'GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" GCamera:MotionPhotoPresentationTimestampUs="968644" '
    'GCamera:SpecialTypeID="portrait"',
    '<Container:Directory><rdf:Seq>\n'
    '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="image/jpeg" Item:Semantic="Primary"/></rdf:li>\n'
    '<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="GainMap" Item:Length="4000"/></rdf:li>\n'
    '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto" '
    'Item:Length="200000"/></rdf:li>\n</rdf:Seq></Container:Directory>',
    _NAMESPACES + ' xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
    'xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" '
    'xmlns:Container="http://ns.google.com/photos/1.0/container/" '
    'xmlns:Item="http://ns.google.com/photos/1.0/container/item/"')


def _save(path, packet: bytes, exif_orientation: int | None = None, h: int = 40, w: int = 56) -> np.ndarray:
    """A photo (stored h x w) with ``packet`` as its XMP and, where given, an EXIF orientation; its stored pixels."""
    pixels = random_image(h, w)
    extra = {"exif": _exif(exif_orientation)} if exif_orientation else {}
    if path.suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode())
        Image.fromarray(pixels).save(path, pnginfo=info, **extra)
    else:
        Image.fromarray(pixels).save(path, quality=95, xmp=packet, **extra)
    return pixels


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _xmp_of(path) -> bytes | None:
    with Image.open(path) as image:
        xmp = image.info.get("xmp")
    return xmp.encode() if isinstance(xmp, str) else xmp


def _property(packet: bytes, name: str) -> list[str]:
    return [m[1] or m[2] for m in re.finditer(rf'{name}="([^"]*)"|<{name}>([^<]*)</{name}>', packet.decode())]


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_cli_keeps_xmp_and_makes_it_true_of_the_output(tmp_path, tiny_weights, caplog, suffix):
    source = tmp_path / f"PXL_0001.MP{suffix}"
    _save(source, _MOTION_HDR, exif_orientation=6)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main([str(source), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    xmp = _xmp_of(out / source.name)
    assert xmp is not None, "the XMP was dropped"
    assert b"harbour at dawn" in xmp and _property(xmp, "xmp:Rating") == ["4"]
    assert _property(xmp, "GCamera:SpecialTypeID") == ["portrait"]  # the rest of the camera's notes kept
    assert _property(xmp, "tiff:Orientation") == ["1"]
    assert _property(xmp, "exif:PixelXDimension") == ["40"] and _property(xmp, "exif:PixelYDimension") == ["56"]
    for claim in ("MotionPhoto", "Container:Directory", "GainMap", "hdrgm:Version"):
        assert claim not in xmp.decode(), claim  # the output has no video or gain map appended
    lost = [r.message for r in caplog.records if "XMP points at" in r.message]
    assert len(lost) == 1 and "motion photo video" in lost[0] and "HDR gain map" in lost[0]
    stripped = tmp_path / "stripped"
    assert main([str(source), "-o", str(stripped), "--model", str(tiny_weights), "-q", "--strip-metadata"]) == 0
    assert _xmp_of(stripped / source.name) is None


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("properties,body", [
    ('tiff:Orientation="6"', ""),  # attribute form
    ("", "<tiff:Orientation>6</tiff:Orientation>"),  # element form
])
def test_xmp_orientation_alone_is_set_upright_so_the_output_is_not_turned_twice(tmp_path, suffix, properties, body):
    # No EXIF: Pillow (and so our reader) turns the pixels by XMP's orientation; a viewer would turn them again.
    source = tmp_path / f"photo{suffix}"
    stored = _save(source, _packet(properties, body))
    pixels, metadata = read_image_and_metadata(source)
    assert pixels.shape[:2] == (56, 40)  # turned upright when read
    write_image(tmp_path / f"out{suffix}", pixels, metadata)
    again = read_image(tmp_path / f"out{suffix}")
    assert again.shape == pixels.shape  # before: read back turned a second time, 40 x 56
    assert _property(_xmp_of(tmp_path / f"out{suffix}"), "tiff:Orientation") == ["1"]
    assert stored.shape[:2] == (40, 56)


def test_xmp_orientation_is_found_under_any_prefix_and_left_where_the_pixels_were_not_turned(caplog):
    other_prefix = _packet('t:Orientation="3"', namespaces='xmlns:t="http://ns.adobe.com/tiff/1.0/" '
                                                           'xmlns:dc="http://purl.org/dc/elements/1.1/" '
                                                           'xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
    assert _property(upright_xmp(other_prefix, "in.jpg", turned=True), "t:Orientation") == ["1"]
    # EXIF said upright, XMP something else: the pixels were not turned, so viewers see the output as the input
    assert upright_xmp(_packet(), "in.jpg", turned=False) == _packet()
    # not the TIFF namespace: not an orientation, not edited
    foreign = _packet('tiff:Orientation="6"', namespaces=_NAMESPACES.replace("http://ns.adobe.com/tiff/1.0/",
                                                                            "urn:example:other"))
    assert _property(upright_xmp(foreign, "in.jpg", turned=True), "tiff:Orientation") == ["6"]


def test_xmp_that_cannot_be_made_true_is_dropped_with_a_warning(caplog):
    structured = _packet("", "<tiff:Orientation><rdf:Alt><rdf:li>6</rdf:li></rdf:Alt></tiff:Orientation>")
    with caplog.at_level(logging.WARNING):
        assert upright_xmp(structured, "in.jpg", turned=True) is None
        assert upright_xmp(b"\x00\x01 not xml at all", "in.jpg", turned=True) is None
    assert "orientation in its XMP metadata could not be set upright" in caplog.text
    assert "is not an XMP packet" in caplog.text
    width_as_structure = _packet('tiff:Orientation="1"', "<tiff:ImageWidth><rdf:Seq/></tiff:ImageWidth>")
    with caplog.at_level(logging.WARNING):
        assert output_xmp(width_as_structure, 40, 56, "out.jpg") is None
    assert "could not be made true of the output (pixel size)" in caplog.text


def test_xmp_over_one_jpeg_segment_is_not_written_and_said(tmp_path, caplog):
    packet = _packet(body="<dc:description>" + "x" * 70_000 + "</dc:description>")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.jpg", random_image(), ImageMetadata(xmp=packet))
    assert _xmp_of(tmp_path / "out.jpg") is None and "larger than one JPEG segment holds" in caplog.text
    write_image(tmp_path / "out.png", random_image(), ImageMetadata(xmp=packet))  # PNG holds it
    assert b"x" * 70_000 in _xmp_of(tmp_path / "out.png")


def test_imagemagick_png_xmp_text_is_carried_as_xmp_not_copied_as_stale_text(tmp_path):
    packet = _packet()
    text = "\nxmp\n" + f"{len(packet):8d}\n" + packet.hex()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type xmp", text, zip=True)
    Image.fromarray(random_image()).save(tmp_path / "magick.png", pnginfo=info)
    pixels, metadata = read_image_and_metadata(tmp_path / "magick.png")
    assert pixels.shape[:2] == (40, 56)  # Pillow does not read this chunk's orientation: nothing turned
    write_image(tmp_path / "out.png", pixels, metadata)
    with Image.open(tmp_path / "out.png") as out:
        assert "Raw profile type xmp" not in out.info and b"harbour at dawn" in _xmp_of(tmp_path / "out.png")


def test_heif_and_avif_encoders_are_given_the_xmp_made_true_of_the_output():
    image = random_image(56, 40)
    given = encoder_metadata(ImageMetadata(xmp=_MOTION_HDR), image, "out.heic")
    assert _property(given["xmp"], "exif:PixelXDimension") == ["40"] and b"MotionPhoto" not in given["xmp"]


def test_avif_output_carries_xmp(tmp_path):
    source = tmp_path / "photo.jpg"
    _save(source, _packet(), exif_orientation=6)
    pixels, metadata = read_image_and_metadata(source)
    write_image(tmp_path / "out.avif", pixels, metadata)
    with Image.open(tmp_path / "out.avif") as out:
        xmp = out.info.get("xmp")
    assert xmp and b"harbour at dawn" in xmp and _property(xmp, "tiff:Orientation") == ["1"]


def test_formats_that_hold_no_metadata_name_the_xmp_they_drop(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.bmp", random_image(), ImageMetadata(xmp=_packet()))
    assert "out.bmp: the input's XMP is not written into .bmp files" in caplog.text
