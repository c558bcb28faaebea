"""A photo's colour profile and EXIF reach its deblurred output (orientation set upright), pixels unchanged."""

import functools
import io
import logging
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from runtime.cli import main
from runtime.image_metadata import ImageMetadata, upright_exif
from runtime.images import read_image, read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image

_MAKE, _DATETIME_ORIGINAL, _EXIF_IFD, _GPS_IFD, _ORIENTATION = 0x010F, 0x9003, 0x8769, 0x8825, 0x0112
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003


@functools.cache
def _profile() -> bytes:
    """A real ICC profile that is not sRGB (a viewer would show the pixels differently without it); made once, as
    its header records when."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def _exif(orientation: int = 6, stored: tuple[int, int] = (56, 40)) -> Image.Exif:
    """A camera's EXIF: ``stored`` is the picture's (width, height) as stored, which the Exif directory records."""
    exif = Image.Exif()
    exif[_MAKE] = "BlurCam"
    exif[_ORIENTATION] = orientation
    exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = "2026:12:05 10:00:00"
    exif.get_ifd(_EXIF_IFD)[_PIXEL_X], exif.get_ifd(_EXIF_IFD)[_PIXEL_Y] = stored
    exif.get_ifd(_GPS_IFD)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    return exif


def _photo(path, fmt: str, h: int = 40, w: int = 56, orientation: int = 6, icc: bytes | None = None) -> np.ndarray:
    """Save stored pixels (h x w RGB) with a profile and EXIF; returns the stored pixels (RGB)."""
    pixels = random_image(h, w)
    extra = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(path, fmt, exif=_exif(orientation, (w, h)), icc_profile=icc or _profile(), **extra)
    return pixels


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".png", "PNG")])
def test_cli_keeps_profile_and_exif_upright(tmp_path, tiny_weights, suffix, fmt):
    source = tmp_path / f"photo{suffix}"
    _photo(source, fmt)
    assert main([str(source), "-o", str(tmp_path / "kept"), "--model", str(tiny_weights), "-q"]) == 0
    assert main([str(source), "-o", str(tmp_path / "bare"), "--model", str(tiny_weights), "-q",
                 "--strip-metadata"]) == 0
    with Image.open(tmp_path / "kept" / source.name) as out:
        exif = out.getexif()
        assert out.info.get("icc_profile") == _profile()
        assert exif[_ORIENTATION] == 1 and exif[_MAKE] == "BlurCam"
        assert exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] == "2026:12:05 10:00:00"
        assert exif.get_ifd(_GPS_IFD)[2] == (52.0, 31.0, 12.0)
        assert out.size == (40, 56)  # stored 56 wide, orientation 6: upright it is 40 wide, 56 high
        # The Exif directory's pixel size is the output's (it said 56 wide, 40 high: the stored picture's).
        assert (exif.get_ifd(_EXIF_IFD)[_PIXEL_X], exif.get_ifd(_EXIF_IFD)[_PIXEL_Y]) == (40, 56)
    with Image.open(tmp_path / "bare" / source.name) as bare:
        assert "icc_profile" not in bare.info and not bare.getexif()
    # Metadata changes no pixel: the two outputs decode to the same array, upright.
    kept, bare = read_image(tmp_path / "kept" / source.name), read_image(tmp_path / "bare" / source.name)
    assert kept.shape == (56, 40, 3) and np.array_equal(kept, bare)


def test_side_by_side_output_records_its_own_pixel_size(tmp_path, tiny_weights):
    source = tmp_path / "photo.jpg"
    _photo(source, "JPEG", orientation=1)
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q", "--side-by-side"]) == 0
    with Image.open(tmp_path / "out" / source.name) as out:
        exif = out.getexif()
        assert out.size[0] > 56 and (exif.get_ifd(_EXIF_IFD)[_PIXEL_X], exif.get_ifd(_EXIF_IFD)[_PIXEL_Y]) == out.size


def test_exif_orientation_patched_in_place_both_byte_orders():
    for order in ("<", ">"):
        head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
        entries = [(_MAKE, 2, 4, b"Cam\x00"), (_ORIENTATION, 3, 1, struct.pack(order + "H", 8) + b"\0\0")]
        ifd = struct.pack(order + "H", len(entries)) + b"".join(
            struct.pack(order + "HHI", tag, kind, count) + value for tag, kind, count, value in entries)
        exif = head + ifd + b"\0\0\0\0" + b"maker notes stay"
        patched = upright_exif(exif)
        assert patched is not None and len(patched) == len(exif)
        loaded = Image.Exif()
        loaded.load(b"Exif\x00\x00" + patched)
        assert loaded[_ORIENTATION] == 1 and loaded[_MAKE] == "Cam"
        assert sum(a != b for a, b in zip(exif, patched)) == 1  # 8 -> 1 in the orientation's low byte only
        no_orientation = head + struct.pack(order + "H", 1) + struct.pack(order + "HHI", _MAKE, 2, 4) + b"Cam\x00"
        assert upright_exif(no_orientation) == no_orientation


@pytest.mark.parametrize("exif", [b"", b"II*\x00", b"XX*\x00\x08\x00\x00\x00", b"II*\x00\xff\xff\x00\x00",
                                  b"II*\x00\x08\x00\x00\x00\x09\x00"])
def test_malformed_exif_is_dropped(exif):
    assert upright_exif(exif) is None


def test_corrupt_exif_in_a_photo_warns_and_the_photo_is_still_deblurred(tmp_path, tiny_weights, caplog):
    source = tmp_path / "photo.jpg"
    buffer = io.BytesIO()
    Image.fromarray(random_image()).save(buffer, "JPEG")
    data = buffer.getvalue()
    broken = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x40\x00"  # a directory of 64 entries, none there
    source.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(broken) + 2) + broken + data[2:])
    with caplog.at_level(logging.WARNING):
        assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert "EXIF block is malformed" in caplog.text
    with Image.open(tmp_path / "out" / "photo.jpg") as out:
        assert not out.getexif() and out.size == (56, 40)
    caplog.clear()  # asked to strip it: nothing to say of metadata that is not written anyway
    with caplog.at_level(logging.WARNING):
        assert main([str(source), "-o", str(tmp_path / "bare"), "--model", str(tiny_weights), "-q",
                     "--strip-metadata"]) == 0
        assert read_image(source).shape == (40, 56, 3)
    assert "EXIF" not in caplog.text
    with Image.open(tmp_path / "bare" / "photo.jpg") as out:
        assert not out.getexif() and out.size == (56, 40)


def test_large_profile_split_across_jpeg_segments_and_16bit_png(tmp_path):
    profile = bytes(range(256)) * 600  # 153,600 bytes: three APP2 segments
    image = random_image(24, 32)
    write_image(tmp_path / "big.jpg", image, ImageMetadata(icc_profile=profile))
    with Image.open(tmp_path / "big.jpg") as out:
        assert out.info["icc_profile"] == profile
    assert (tmp_path / "big.jpg").read_bytes().count(b"ICC_PROFILE\x00") == 3
    deep = (image.astype(np.uint16) * 257)
    write_image(tmp_path / "deep.png", deep, ImageMetadata(icc_profile=_profile(), exif=_exif(1).tobytes()[6:]))
    with Image.open(tmp_path / "deep.png") as out:
        assert out.info["icc_profile"] == _profile() and out.getexif()[_MAKE] == "BlurCam"
    assert np.array_equal(read_image(tmp_path / "deep.png"), deep)


def test_read_returns_upright_metadata_and_no_metadata_for_plain_files(tmp_path):
    _photo(tmp_path / "a.jpg", "JPEG", orientation=8)
    _, metadata = read_image_and_metadata(tmp_path / "a.jpg")
    assert metadata.icc_profile == _profile()
    loaded = Image.Exif()
    loaded.load(b"Exif\x00\x00" + metadata.exif)
    assert loaded[_ORIENTATION] == 1 and loaded[_MAKE] == "BlurCam"
    write_image(tmp_path / "plain.png", random_image())
    assert not read_image_and_metadata(tmp_path / "plain.png")[1]


@pytest.mark.parametrize("suffix", [".bmp"])  # TIFF and WebP carry them: test_tiff_tags.py, test_webp_chunks.py
def test_formats_without_metadata_support_say_so(tmp_path, suffix, caplog):
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"out{suffix}", random_image(), ImageMetadata(icc_profile=_profile()))
    assert f"not written into {suffix} files" in caplog.text
    assert read_image(tmp_path / f"out{suffix}").shape == (40, 56, 3)
    caplog.clear()
    write_image(tmp_path / f"plain{suffix}", random_image())  # nothing to carry: nothing said
    assert "not written" not in caplog.text
