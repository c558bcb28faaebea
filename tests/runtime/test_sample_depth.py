"""A sample's scale where it is not its dtype's (runtime.sample_depth): PNM files with any largest value are read at
full scale, 16-bit images written to 8-bit formats are converted rather than clipped white, a grey+alpha TIFF keeps
its alpha. Before, each came out wrong with exit status 0."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from runtime.cli import main
from runtime.images import ImageReadError, ImageWriteError, read_image, write_image
from runtime.sample_depth import pnm_maxval, to_full_scale

RNG = np.random.default_rng(7)
GREY12 = RNG.integers(0, 4096, (40, 56)).astype(np.uint16)  # a 12-bit scanner's samples
_Y, _X = np.mgrid[0:40, 0:56]
#: Smooth 16-bit colour (lossy 8-bit codecs keep it close), every sample distinct from its 8-bit rounding.
COLOUR16 = np.dstack([_X * 1170 + 7, _Y * 1600 + 300, (_X + _Y) * 680 + 129]).astype(np.uint16)


def _pnm(magic: bytes, samples: np.ndarray, maxval: int, comment: bytes = b"") -> bytes:
    height, width = samples.shape[:2]
    stored = samples.astype(">u2" if maxval > 255 else np.uint8)
    return b"%s\n%s%d %d\n%d\n" % (magic, comment, width, height, maxval) + stored.tobytes()


@pytest.mark.parametrize("maxval", [4095, 1023, 15, 1])
def test_a_pnm_files_samples_are_read_at_full_scale(tmp_path, maxval):
    stored = GREY12 % (maxval + 1)
    stored[0, 0] = maxval
    path = tmp_path / "scan.pgm"
    path.write_bytes(_pnm(b"P5", stored, maxval, b"# a scanner\n"))
    image = read_image(path)
    full = 255 if maxval < 256 else 65535
    assert image.dtype == (np.uint8 if maxval < 256 else np.uint16)
    np.testing.assert_array_equal(image, np.round(stored * (full / maxval)).astype(image.dtype))
    # before: the samples as stored (0..4095 of 65535: a nearly black photo)
    assert image.max() == full


def test_a_colour_pnm_and_a_pam_file_are_scaled_too(tmp_path):
    ppm = tmp_path / "scan.ppm"
    ppm.write_bytes(_pnm(b"P6", COLOUR16 >> 4, 4095))
    expected = np.round((COLOUR16 >> 4) * (65535 / 4095)).astype(np.uint16)
    np.testing.assert_array_equal(read_image(ppm), expected[..., ::-1])  # read as BGR
    pam = b"P7\nWIDTH 56\nHEIGHT 40\nDEPTH 1\nMAXVAL 4095\nTUPLTYPE GRAYSCALE\nENDHDR\n"
    assert pnm_maxval(pam) == 4095 and pnm_maxval(b"P4\n56 40\n") is None and pnm_maxval(b"\x89PNG") is None


def test_full_scale_samples_and_other_files_are_left_as_they_are():
    samples = np.array([0, 17, 255], np.uint8)
    assert to_full_scale(samples, 255) is samples and to_full_scale(samples, None) is samples
    np.testing.assert_array_equal(to_full_scale(np.array([0, 7, 15, 20], np.uint8), 15), [0, 119, 255, 255])


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp", ".gif"])
def test_16_bit_samples_in_an_8_bit_format_are_converted_not_clipped(tmp_path, caplog, suffix):
    path = tmp_path / f"photo{suffix}"
    with caplog.at_level(logging.WARNING):
        write_image(path, COLOUR16)
    back = read_image(path).astype(float)
    if back.ndim == 2:
        back = back[..., None]
    expected = COLOUR16 / 257.0
    assert back.mean() == pytest.approx(expected.mean(), abs=3)  # before: 255 everywhere, a white image
    assert np.abs(back - expected).mean() < (8 if suffix in (".jpg", ".gif") else 1)  # lossy codecs and a palette
    assert f"photo{suffix}: 16-bit samples written with 8 bits" in caplog.text


def test_formats_that_hold_16_bits_keep_them_without_a_word(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        for suffix in (".png", ".tif", ".ppm"):
            write_image(tmp_path / f"photo{suffix}", COLOUR16)
            np.testing.assert_array_equal(read_image(tmp_path / f"photo{suffix}"), COLOUR16)
    assert "16-bit" not in caplog.text


def test_integers_in_a_float_only_format_are_written_in_0_to_1(tmp_path):
    write_image(tmp_path / "photo.hdr", COLOUR16)
    back = read_image(tmp_path / "photo.hdr")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, COLOUR16 / 65535, atol=0.01, rtol=0.01)  # before: up to 257 (v / 255)


def test_a_grey_and_alpha_tiff_keeps_its_alpha(tmp_path):
    grey = (GREY12 >> 4).astype(np.uint8)
    alpha = np.zeros_like(grey)
    alpha[:, 28:] = 255
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "cutout.tif")
    image = read_image(tmp_path / "cutout.tif")
    assert image.shape == (40, 56, 4)  # before: (40, 56), the alpha dropped
    np.testing.assert_array_equal(image[..., 3], alpha)
    np.testing.assert_array_equal(image[..., 0], grey)


@pytest.mark.parametrize("depth", [1, 8, 16])
def test_a_grey_pngs_transparent_level_becomes_its_alpha(tmp_path, depth):
    """OpenCV reads a grey PNG with a transparent grey level (tRNS) as grey alone: the transparency was lost
    without a word, where an RGB PNG's transparent colour is kept as alpha."""
    grey = (GREY12 >> 4).astype(np.uint8) | 1
    grey[:, :8] = 0
    key, stored = 0, grey
    if depth == 1:
        stored = grey > 0
    elif depth == 16:
        stored, key = grey.astype(np.uint16) * 257, 1234
        stored[:, :8] = key
    Image.fromarray(stored).save(tmp_path / "key.png", transparency=key)
    image = read_image(tmp_path / "key.png")
    full = 65535 if depth == 16 else 255
    assert image.shape == (40, 56, 4)  # before: (40, 56)
    assert (image[:, :8, 3] == 0).all() and (image[:, 8:, 3] == full).all()
    expected = stored.astype(np.uint8) * 255 if depth == 1 else stored
    np.testing.assert_array_equal(image[..., 0], expected)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".ppm", ".sr"])
def test_alpha_into_a_format_without_it_is_left_out_with_a_warning(tmp_path, caplog, suffix):
    """A BGRA image written as JPEG or BMP lost its alpha without a word, as Sun raster with wrong colours
    ((100, 120, 140) read back as (120, 120, 0)), and PPM failed with OpenCV's multi-line log block."""
    image = np.zeros((24, 32, 4), np.uint8)
    image[...] = [100, 120, 140, 255]
    image[:, :8, 3] = 0
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"cutout{suffix}", image)
    assert f"cutout{suffix}: its transparency (alpha channel) is not kept: {suffix} files hold none" in caplog.text
    back = read_image(tmp_path / f"cutout{suffix}")
    assert back.shape == (24, 32, 3) and np.abs(back.astype(int) - [100, 120, 140]).max() <= 2


def test_colour_into_a_grey_only_format_is_one_line(tmp_path, capfd):
    with pytest.raises(ImageWriteError) as refused:
        write_image(tmp_path / "photo.pgm", np.zeros((24, 32, 3), np.uint8))
    assert str(refused.value) == (f"{tmp_path / 'photo.pgm'}: .pgm files hold grey pixels only and this image is "
                                  "in colour; name it .ppm or .png")
    assert capfd.readouterr().err == ""  # no OpenCV log block


def test_unwritable_things_are_one_line_errors(tmp_path):
    with pytest.raises(ImageWriteError, match="a list, not a numpy array"):
        write_image(tmp_path / "a.png", [[1]])
    with pytest.raises(ImageWriteError, match="not a file name"):
        write_image("", COLOUR16)


def test_an_output_format_opencv_has_turned_off_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCV_IO_ENABLE_OPENEXR", raising=False)  # OpenCV's default: OpenEXR off
    with pytest.raises(ImageWriteError, match=r"cannot write \.exr files .*write \.tif instead"):
        write_image(tmp_path / "a.exr", COLOUR16.astype(np.float32) / 65535)  # before: a cv2.error traceback


def test_the_command_line_writes_a_16_bit_png_named_jpg_as_a_real_jpeg(tmp_path, tiny_weights, caplog):
    png = tmp_path / "in" / "photo.png"
    png.parent.mkdir()
    write_image(png, COLOUR16)
    (tmp_path / "in" / "download.jpg").write_bytes(png.read_bytes())  # the same 16-bit PNG under a .jpg name
    with caplog.at_level(logging.WARNING):
        assert main([str(png.parent), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    deblurred = read_image(tmp_path / "out" / "photo.png") / 257.0
    as_jpeg = read_image(tmp_path / "out" / "download.jpg")
    assert as_jpeg.dtype == np.uint8
    assert np.abs(as_jpeg - deblurred).mean() < 8  # before: 255 everywhere, a white image
    assert "download.jpg: 16-bit samples written with 8 bits" in caplog.text


@pytest.mark.parametrize("suffix", [".tif", ".ppm", ".png"])
def test_without_opencv_deep_colour_is_refused_not_truncated(tmp_path, monkeypatch, suffix):
    """Round 17: in the thin install (no OpenCV) a 16-bit colour TIFF or PPM was read by Pillow as 8 bits and
    deblurred so, exit 0; only PNGs were refused."""
    import cv2

    import runtime.images

    cv2.imwrite(str(tmp_path / f"deep{suffix}"), COLOUR16)
    monkeypatch.setattr(runtime.images, "opencv", lambda: None)
    with pytest.raises(ImageReadError, match=r"a 16-bit colour (TIFF|PPM|PNG); Pillow would truncate it to 8 bits"):
        read_image(tmp_path / f"deep{suffix}")
    cv2.imwrite(str(tmp_path / f"eight{suffix}"), (COLOUR16 >> 8).astype(np.uint8))
    assert read_image(tmp_path / f"eight{suffix}").dtype == np.uint8  # 8-bit colour: read as ever
