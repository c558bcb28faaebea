"""Files Pillow cannot open but OpenCV decodes (float colour TIFFs, what this tool writes for float inputs; Radiance
HDR): their size is still read from the header, so the pixel limit refuses a decompression bomb before decoding and
the one-page rule a multi-page file; a float TIFF's metadata is still carried; a damaged TIFF is one ImageReadError;
float pixels are never written as 8-bit black."""

import struct

import numpy as np
import pytest

from runtime import tiff_tags
from runtime.images import ImageReadError, ImageWriteError, read_image, read_image_and_metadata, write_image

cv2 = pytest.importorskip("cv2", reason="float TIFF and HDR files are decoded by OpenCV: pip install '.[cpu]'")


def _float_tiff(height: int, width: int, pages: int = 1) -> bytes:
    image = np.full((height, width, 3), 0.5, np.float32)
    if pages == 1:
        ok, encoded = cv2.imencode(".tif", image, [cv2.IMWRITE_TIFF_COMPRESSION, 5])
        assert ok
        return encoded.tobytes()
    ok, encoded = cv2.imencodemulti(".tif", [image * (i + 1) / pages for i in range(pages)])
    assert ok
    return encoded.tobytes()


def _refuses_before_decoding(monkeypatch):
    """cv2.imdecode fails the test if called: the refusal must come from the header."""
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("decoded before the size was checked"))


def test_pillow_cannot_open_a_float_colour_tiff_but_its_layout_is_read(tmp_path):
    from PIL import Image, UnidentifiedImageError

    data = _float_tiff(30, 50)
    (tmp_path / "f.tif").write_bytes(data)
    with pytest.raises((UnidentifiedImageError, OSError)):
        Image.open(tmp_path / "f.tif")  # why the header needs reading another way
    assert tiff_tags.layout(data) == (50, 30, 1, 1)
    assert tiff_tags.layout(_float_tiff(8, 12, pages=3))[2] == 3
    assert tiff_tags.layout(b"II*\x00\x08\x00\x00\x00") is None and tiff_tags.layout(b"\x89PNG") is None
    loop = bytearray(data)  # a directory chain pointing back at itself is counted once
    order, first, entries, _ = tiff_tags._entries(data)
    struct.pack_into(order + "I", loop, first + 2 + 12 * len(entries), first)
    assert tiff_tags.layout(bytes(loop))[2] == 1


def test_a_float_tiff_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "bomb.tif"
    path.write_bytes(_float_tiff(2000, 1000))  # 2 MP of float32: 24 MB decoded from a small file
    _refuses_before_decoding(monkeypatch)
    with pytest.raises(ImageReadError, match=r"2000x1000 is 2 megapixels, over the limit of 1 .*--max-megapixels"):
        read_image(path, max_pixels=1_000_000)


def test_a_multi_page_float_tiff_is_refused_not_cut_to_its_first_page(tmp_path, monkeypatch):
    path = tmp_path / "pages.tif"
    path.write_bytes(_float_tiff(16, 24, pages=3))
    _refuses_before_decoding(monkeypatch)
    with pytest.raises(ImageReadError, match="a TIFF with 3 pages or frames; only single images are deblurred"):
        read_image(path)


def test_a_float_tiffs_profile_and_size_reach_the_output(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "icc.tif"
    path.write_bytes(tiff_tags.with_tags(_float_tiff(20, 28), {tiff_tags.ICC_PROFILE: (7, len(icc), icc)}))
    image, metadata = read_image_and_metadata(path)
    assert image.shape == (20, 28, 3) and image.dtype == np.float32
    assert metadata.icc_profile == icc  # was NO_METADATA: the profile was lost silently
    write_image(tmp_path / "out.tif", image, metadata)
    assert tiff_tags.read_tags((tmp_path / "out.tif").read_bytes(), (tiff_tags.ICC_PROFILE,))[
        tiff_tags.ICC_PROFILE][2] == icc


@pytest.mark.parametrize("name", ["bomb.hdr", "bomb_named.png"])
def test_a_radiance_hdr_bomb_is_refused_from_its_header(tmp_path, monkeypatch, name):
    ok, encoded = cv2.imencode(".hdr", np.full((1500, 1000, 3), 0.5, np.float32))
    assert ok
    path = tmp_path / name
    path.write_bytes(encoded.tobytes())
    _refuses_before_decoding(monkeypatch)
    with pytest.raises(ImageReadError, match=r"1500x1000 is 1.5 megapixels, over the limit of 1 "):
        read_image(path, max_pixels=1_000_000)


def test_a_tiff_whose_next_directory_lies_outside_it_is_read_not_a_type_error(tmp_path):
    """Pillow raised TypeError ("Missing dimensions") counting the pages of a TIFF whose next-directory pointer
    lies beyond its end (found by fuzzing); the API promises ImageReadError. Its one image is intact: it is read."""
    image = (np.arange(12 * 16 * 3).reshape(12, 16, 3) % 251).astype(np.uint8)
    data = bytearray(cv2.imencode(".tif", image)[1].tobytes())
    order, first, entries, _ = tiff_tags._entries(bytes(data))
    struct.pack_into(order + "I", data, first + 2 + 12 * len(entries), 1241513984)
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_image(path), image)
    data[first + 2:first + 2 + 12 * len(entries)] = b"\xff" * 12 * len(entries)  # no directory left at all
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="damaged.tif"):
        read_image(path)


def test_float_pixels_are_not_written_as_8_bit_black(tmp_path):
    image = np.full((8, 8, 3), 0.5, np.float32)
    with pytest.raises(ImageWriteError, match=r"float pixels cannot be written as \.png .* write it as \.tif"):
        write_image(tmp_path / "out.png", image)
    assert not (tmp_path / "out.png").exists()
    write_image(tmp_path / "out.tif", image)
    np.testing.assert_array_equal(read_image(tmp_path / "out.tif"), image)


def test_opencvs_own_error_block_is_not_printed_beside_the_one_line(tmp_path, capfd):
    """A TIFF OpenCV refuses while reading its header (float samples of 16 bits) printed a 6-line "[ERROR]
    imdecode_" block to stderr besides the command's one ``error:`` line."""
    from runtime.images import quiet_opencv

    quiet_opencv()  # what every command does: OpenCV's errors on, its warnings off
    data = bytearray(cv2.imencode(".tif", np.full((8, 8), 0.5, np.float32))[1].tobytes())
    order, first, entries, _ = tiff_tags._entries(bytes(data))
    index = next(i for i, entry in enumerate(entries) if entry[0] == 258)  # BitsPerSample: 32 -> 16
    struct.pack_into(order + "H", data, first + 2 + 12 * index + 8, 16)
    (tmp_path / "f16.tif").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="f16.tif") as info:
        read_image(tmp_path / "f16.tif")
    assert "[ERROR" not in capfd.readouterr().err
    assert "BytesIO" not in str(info.value)  # Pillow's text for an unknown format named its buffer
    assert cv2.getLogLevel() == 2  # put back
