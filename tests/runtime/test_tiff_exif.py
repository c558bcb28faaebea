"""EXIF moves between TIFF files and every other output: a photo's EXIF reaches a TIFF output (it was left out with a
warning), and a TIFF's own EXIF (camera, capture time, exposure, GPS in its tags) reaches any output (it was lost
without a word). Every field keeps its type and value, in the destination's byte order; the maker note, whose offsets
do not survive a move, is left out with a warning."""

import logging
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime import tiff_tags
from runtime.image_metadata import movable_exif
from runtime.images import read_image, read_image_and_metadata, write_image
from tests.runtime.sample_exif import EXIF_IFD, GPS_IFD, MAKER_NOTE, PIXEL_X, PIXEL_Y, camera_exif, directory, fields
from tests.runtime.sample_images import random_image

#: IFD0 fields of camera_exif that describe the photo (the rest describe how its pixels are stored).
_DESCRIPTIVE = {270, 271, 272, 306, 315, 33432, 18246}


def _jpeg_with_exif(path, block: bytes, pixels: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", pixels)
    payload = b"Exif\0\0" + block
    path.write_bytes(encoded[:2].tobytes() + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
                     + encoded[2:].tobytes())


def _moved(block_fields: dict, width: int, height: int) -> dict:
    """What of a camera's fields an output carries: the descriptive IFD0 ones and the Exif, GPS and Interoperability
    directories, no maker note, the pixel size the output's (as :func:`~runtime.image_metadata.output_exif` sets)."""
    moved = {key: value for key, value in block_fields.items()
             if (key[0] or key[1] in _DESCRIPTIVE) and key[1] != MAKER_NOTE}
    for tag, size in ((PIXEL_X, width), (PIXEL_Y, height)):
        kind, count, _ = moved[((EXIF_IFD,), tag)]
        moved[((EXIF_IFD,), tag)] = (kind, count, (size,))
    return moved


def _carried(output_fields: dict) -> dict:
    return {key: value for key, value in output_fields.items() if key[0] or key[1] in _DESCRIPTIVE}


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_photos_exif_reaches_a_tiff_output_every_type_and_value_kept(tmp_path, order, caplog):
    block = camera_exif(order, orientation=6)
    _jpeg_with_exif(tmp_path / "photo.jpg", block, random_image(40, 56))
    pixels, metadata = read_image_and_metadata(tmp_path / "photo.jpg")
    assert pixels.shape[:2] == (56, 40)  # turned upright by its orientation
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.tif", pixels, metadata)
    write_image(tmp_path / "plain.tif", pixels)
    assert "EXIF is not written" not in caplog.text  # before: "the input's EXIF is not written into TIFF files"
    assert "maker note" in caplog.text
    written, plain = (tmp_path / "out.tif").read_bytes(), (tmp_path / "plain.tif").read_bytes()
    assert _carried(fields(written)) == _moved(fields(block), 40, 56)  # MM numbers now II, types kept
    assert written[8:len(plain)] == plain[8:]  # every byte OpenCV wrote kept
    assert np.array_equal(read_image(tmp_path / "out.tif"), read_image(tmp_path / "plain.tif"))  # upright, once
    with Image.open(tmp_path / "out.tif") as out:  # a reader that knows nothing of us finds them
        exif = out.getexif()
        assert (exif[271], exif[272]) == ("Canon", "EOS R5")
        assert exif.get_ifd(EXIF_IFD)[36867] == "2026:12:05 09:59:59"
        assert exif.get_ifd(GPS_IFD)[2] == (52.0, 31.0, 12.5)


def _tiff_with_exif(path) -> np.ndarray:
    """A TIFF keeping a camera's EXIF in its own directories, as a raw converter writes it (here by Pillow, whose
    writer chooses some types itself and does not move an Interoperability directory); returns its pixels (RGB)."""
    exif = Image.Exif()
    exif.load(b"Exif\0\0" + camera_exif("<", orientation=1, interop=False))
    pixels = random_image(40, 56)
    Image.fromarray(pixels).save(path, "TIFF", exif=exif)
    return pixels


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_a_tiffs_own_exif_reaches_every_output(tmp_path, suffix, caplog):
    _tiff_with_exif(tmp_path / "scan.tif")
    with caplog.at_level(logging.WARNING):
        pixels, metadata = read_image_and_metadata(tmp_path / "scan.tif")
    assert "maker note" in caplog.text and "is not carried" in caplog.text
    assert metadata.exif is not None  # before: None, the TIFF's EXIF lost without a word
    write_image(tmp_path / f"out{suffix}", pixels, metadata)
    with Image.open(tmp_path / f"out{suffix}") as out:  # a TIFF's are its own tags, others' an EXIF block
        block = (tmp_path / "out.tif").read_bytes() if suffix == ".tif" else out.info["exif"]
        exif = out.getexif()
        assert (exif[271], exif.get_ifd(EXIF_IFD)[36867]) == ("Canon", "2026:12:05 09:59:59")
        assert exif.get_ifd(GPS_IFD)[2] == (52.0, 31.0, 12.5)
    block = block[6:] if block.startswith(b"Exif\0\0") else block
    assert _carried(fields(block)) == _moved(fields((tmp_path / "scan.tif").read_bytes()), 56, 40)


def test_exif_directories_that_point_back_or_outside_are_left_out(tmp_path):
    block = b"II*\0" + struct.pack("<I", 8) + directory("<", [
        (271, 2, 6, b"Canon\0"), (EXIF_IFD, 4, 1, struct.pack("<I", 8)),  # the Exif directory is IFD0 itself: a loop
        (GPS_IFD, 4, 1, struct.pack("<I", 1 << 30)),  # beyond the block
        (272, 2, 100, struct.pack("<I", 1 << 20))], 8)  # a value beyond the block
    moved = movable_exif(block)
    assert moved is not None and [entry[0] for entry in moved.entries] == [271] and moved.children == ()
    _jpeg_with_exif(tmp_path / "photo.jpg", block, random_image(40, 56))
    pixels, metadata = read_image_and_metadata(tmp_path / "photo.jpg")
    write_image(tmp_path / "out.tif", pixels, metadata)
    with Image.open(tmp_path / "out.tif") as out:
        assert out.getexif()[271] == "Canon"
    assert np.array_equal(read_image(tmp_path / "out.tif"), pixels)


def test_a_directory_copied_into_another_byte_order_reads_back_the_same():
    block = camera_exif(">")
    copied = movable_exif(block)
    assert copied is not None and copied.left_out == {MAKER_NOTE}
    for order in "<>":
        laid_out = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 40) + bytes(32)
        laid_out += copied.at(len(laid_out), order)  # at offset 40, not 8: every offset moved
        expected = {key: value for key, value in fields(block).items()
                    if (key[0] or key[1] in _DESCRIPTIVE) and key[1] != MAKER_NOTE}
        assert fields(laid_out) == expected
    assert tiff_tags.in_order(struct.pack(">II", 1, 250), 5, ">", "<") == struct.pack("<II", 1, 250)


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_directory_pointer_is_read_as_its_type_says(order):
    """A GPS pointer written as a SHORT (the field's first two bytes) is followed in either byte order; one of several
    values, or of a type that holds no offset, is not."""
    gps_at = 8 + 2 + 2 * 12 + 4 + 6  # after IFD0 (two entries, a zero link) and Make's six bytes
    gps = directory(order, [(1, 2, 2, b"N\0")], gps_at)
    for kind, count, field, followed in ((3, 1, struct.pack(order + "H", gps_at), True),
                                         (4, 1, struct.pack(order + "I", gps_at), True),
                                         (3, 2, struct.pack(order + "HH", gps_at, gps_at), False),
                                         (2, 1, struct.pack(order + "I", gps_at), False)):
        head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
        ifd0 = (struct.pack(order + "H", 2) + struct.pack(order + "HHII", 271, 2, 6, 8 + 2 + 24 + 4)
                + struct.pack(order + "HHI", GPS_IFD, kind, count) + field.ljust(4, b"\0") + struct.pack(order + "I", 0)
                + b"Canon\0")
        moved = movable_exif(head + ifd0 + gps)
        assert moved is not None and [entry[0] for entry in moved.entries] == [271]
        assert [tag for tag, _ in moved.children] == ([GPS_IFD] if followed else [])
