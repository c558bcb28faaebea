"""A photographer's TIFF keeps its colour profile, XMP, IPTC and print resolution: added as tags after OpenCV wrote
the pixels, which stay exactly those of the file written without them."""

import logging
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime import jpeg_segments, tiff_tags
from runtime.image_metadata import tiff_carried_tags
from runtime.images import apply_orientation, read_image, read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image
from tests.runtime.test_image_metadata import _profile
from tests.runtime.test_image_xmp import _packet, _property
from tests.runtime.test_jpeg_segments import _CAPTION, _OTHER, _THUMBNAIL, _iptc

_IPTC = _iptc(b"Storm over the harbour", b"(c) 2026 A. Photographer")


def _tiff(path, orientation: int = 1) -> np.ndarray:
    """A TIFF as a raw converter writes it: profile, 300 dpi, XMP, IPTC, Photoshop resources with a thumbnail."""
    pixels = random_image(40, 56)
    info = {tiff_tags.IPTC: _IPTC, tiff_tags.PHOTOSHOP: _CAPTION + _THUMBNAIL + _OTHER, tiff_tags.XMP: _packet(),
            274: orientation}
    Image.fromarray(pixels).save(path, "TIFF", icc_profile=_profile(), dpi=(300, 300), tiffinfo=info)
    return pixels


def test_profile_xmp_iptc_and_resolution_reach_the_output_and_the_pixels_do_not_change(tmp_path, caplog):
    _tiff(tmp_path / "scan.tif")
    pixels, metadata = read_image_and_metadata(tmp_path / "scan.tif")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.tif", pixels, metadata)
        write_image(tmp_path / "plain.tif", pixels)
    assert "not written" not in caplog.text
    with Image.open(tmp_path / "out.tif") as out:
        assert out.info["icc_profile"] == _profile()  # before: none, a ProPhoto scan shown as sRGB
        assert tuple(round(v) for v in out.info["dpi"]) == (300, 300)
        tags = dict(out.tag_v2)
    assert b"harbour at dawn" in bytes(tags[tiff_tags.XMP])
    assert bytes(tags[tiff_tags.IPTC]) == _IPTC
    assert bytes(tags[tiff_tags.PHOTOSHOP]) == _CAPTION + _OTHER  # the input's thumbnail left out
    assert np.array_equal(cv2.imread(str(tmp_path / "out.tif"), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(tmp_path / "plain.tif"), cv2.IMREAD_UNCHANGED))
    written = (tmp_path / "out.tif").read_bytes()
    plain = (tmp_path / "plain.tif").read_bytes()
    assert written[8:len(plain)] == plain[8:]  # every byte OpenCV wrote kept (only the header's pointer moved)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_tiff_with_an_orientation_is_turned_upright_once(tmp_path, orientation, dtype):
    stored = random_image(40, 56).astype(dtype) * (257 if dtype == np.uint16 else 1)
    ok, encoded = cv2.imencode(".tif", stored)
    (tmp_path / "turned.tif").write_bytes(tiff_tags.with_tags(encoded.tobytes(), {
        274: (3, 1, struct.pack("<H", orientation))}))
    expected = apply_orientation(stored, orientation)  # what the tag asks for, as for a JPEG's EXIF
    assert np.array_equal(read_image(tmp_path / "turned.tif"), expected)  # before: OpenCV turned it, then we did


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_a_tiff_with_alpha_and_an_orientation_is_turned_upright_once(tmp_path, orientation, mode):
    """Grey+alpha TIFFs are read by Pillow, which (since 13) turns a TIFF upright as it loads it: turned twice."""
    stored = np.dstack([random_image(40, 56)[..., :1 if mode == "LA" else 3], np.full((40, 56), 200, np.uint8)])
    Image.fromarray(stored.squeeze() if mode == "LA" else stored, mode).save(tmp_path / "t.tif",
                                                                             tiffinfo={274: orientation})
    read = read_image(tmp_path / "t.tif")
    upright = apply_orientation(stored, orientation)
    assert np.array_equal(read[..., [0, 3]] if mode == "LA" else read[..., [2, 1, 0, 3]], upright)


@pytest.mark.parametrize("extra, stored_colour, read_colour", [(2, [200, 150, 100], [200, 150, 100]),
                                                               (1, [100, 75, 50], [199, 149, 99])])
def test_an_8bit_tiffs_colours_are_not_darkened_by_its_alpha(tmp_path, extra, stored_colour, read_colour):
    """OpenCV reads 8-bit RGBA TIFFs through libtiff's RGBA interface, which premultiplies the colours by the alpha:
    a half-transparent (200, 150, 100) was read as (100, 75, 50) and deblurred so, transparent pixels as black.
    Unassociated alpha (2, what Pillow, GIMP and Photoshop write) is read as stored; associated (1) colours
    are un-premultiplied, as for every other input."""
    import tifffile  # scikit-image's dependency
    pixels = np.zeros((16, 24, 4), np.uint8)
    pixels[...] = [*stored_colour, 128]
    pixels[:, :4] = [0, 0, 0, 0] if extra == 1 else [10, 20, 30, 0]
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb", extrasamples=[extra])
    read = read_image(tmp_path / "a.tif")
    assert np.abs(read[8, 12].astype(int) - [*read_colour[::-1], 128]).max() <= 1
    if extra == 2:
        assert read[8, 1].tolist() == [30, 20, 10, 0]  # a transparent pixel keeps its colour


def test_a_turned_tiff_comes_back_upright_with_its_xmp_saying_so(tmp_path):
    stored = _tiff(tmp_path / "portrait.tif", orientation=6)
    pixels, metadata = read_image_and_metadata(tmp_path / "portrait.tif")
    assert pixels.shape[:2] == (stored.shape[1], stored.shape[0])  # turned upright when read
    write_image(tmp_path / "out.tif", pixels, metadata)
    assert read_image(tmp_path / "out.tif").shape == pixels.shape  # not turned a second time
    with Image.open(tmp_path / "out.tif") as out:
        xmp = bytes(out.tag_v2[tiff_tags.XMP])
    assert _property(xmp, "tiff:Orientation") == ["1"]


def test_big_endian_numbers_are_written_in_the_outputs_byte_order():
    entries = [(tiff_tags.X_RESOLUTION, 5, 1, 50), (tiff_tags.Y_RESOLUTION, 5, 1, 58),  # values after the directory
               (tiff_tags.RESOLUTION_UNIT, 3, 1, None)]
    ifd = struct.pack(">H", len(entries)) + b"".join(
        struct.pack(">HHI", tag, kind, count) + (struct.pack(">I", at) if at else struct.pack(">HH", 3, 0))
        for tag, kind, count, at in entries) + struct.pack(">I", 0)
    data = b"MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">II", 1200, 4) + struct.pack(">II", 600, 2)
    carried = {tag: (kind, count, value) for tag, kind, count, value in tiff_carried_tags(data)}
    assert struct.unpack("<II", carried[tiff_tags.X_RESOLUTION][2]) == (1200, 4)
    assert struct.unpack("<II", carried[tiff_tags.Y_RESOLUTION][2]) == (600, 2)
    assert struct.unpack("<H", carried[tiff_tags.RESOLUTION_UNIT][2]) == (3,)  # centimetres


def test_what_does_not_parse_is_left_as_it_is():
    assert tiff_tags.with_tags(b"not a tiff at all", {tiff_tags.XMP: (1, 3, b"abc")}) == b"not a tiff at all"
    assert tiff_tags.read_tags(b"II*\x00\xff\xff\xff\x00", (tiff_tags.XMP,)) == {}  # first directory past the end
    assert jpeg_segments.without_thumbnails(b"8BIM\x04") == b"8BIM\x04"
