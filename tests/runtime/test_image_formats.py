"""Phone photos in HEIF (an iPhone's .heic) and AVIF are deblurred like JPEGs: read upright, written back in their
own format with their EXIF and colour profile (runtime.image_formats); before, neither was listed in a folder and a
named one failed with "not an image OpenCV can decode"."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageCms

import runtime.image_formats as image_formats
from runtime.cli import main
from runtime.image_formats import container_format
from runtime.images import ImageReadError, read_image, read_image_and_metadata, write_image

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif comes with the heif extra")

_MAKE, _ORIENTATION, _EXIF_IFD, _PIXEL_X, _PIXEL_Y = 0x010F, 0x0112, 0x8769, 0xA002, 0xA003
#: A photo as stored: 128 wide, 96 high, orientation 6 (upright it is 96 wide, 128 high).
STORED = skimage.data.astronaut()[100:196, 150:278]


@functools.cache
def _profile() -> bytes:
    """A real ICC profile that is not sRGB; made once, as its header records when."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def _phone_photo(path, fmt: str) -> None:
    """A phone's photo: ``STORED`` with orientation 6, EXIF (camera, stored pixel size) and an ICC profile."""
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[_MAKE], exif[_ORIENTATION] = "PhoneCam", 6
    exif.get_ifd(_EXIF_IFD)[_PIXEL_X], exif.get_ifd(_EXIF_IFD)[_PIXEL_Y] = 128, 96
    Image.fromarray(STORED).save(path, fmt, exif=exif.tobytes(), icc_profile=_profile(), quality=95)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_files_are_known_by_their_brands_not_their_names():
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        box = b"ftyp" + major + b"\0\0\0\0" + b"".join(compatible)
        return (len(box) + 4).to_bytes(4, "big") + box + b"\0" * 16

    assert container_format(ftyp(b"heic", b"mif1", b"heic")) == "HEIF"  # an iPhone's
    assert container_format(ftyp(b"mif1", b"mif1", b"miaf", b"MA1B", b"avif")) == "AVIF"  # generic major brand
    assert container_format(ftyp(b"avif", b"mif1")) == "AVIF"
    assert container_format(ftyp(b"isom", b"mp41")) is None  # an MP4 video
    assert container_format(b"\xff\xd8\xff\xe0" + b"\0" * 20) is None and container_format(b"ftyp") is None


@pytest.mark.parametrize("suffix,fmt", [(".heic", "HEIF"), (".avif", "AVIF")])
def test_phone_photo_is_deblurred_upright_into_its_own_format_with_its_metadata(tmp_path, tiny_weights, suffix,
                                                                                  fmt):
    photos = tmp_path / "photos"
    photos.mkdir()
    _phone_photo(photos / f"IMG_0001{suffix}", fmt)
    upright = np.rot90(STORED, -1)[..., ::-1]  # orientation 6, as BGR
    read, metadata = read_image_and_metadata(photos / f"IMG_0001{suffix}")
    assert read.shape == (128, 96, 3) and _psnr(read, upright) > 35  # upright (lossy, so near)
    write_image(tmp_path / "upright.png", read)  # the same pixels through a lossless file, for reference
    # A folder lists them (before: skipped, as not images).
    assert main([str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert main([str(tmp_path / "upright.png"), "-o", str(tmp_path / "ref"), "--model", str(tiny_weights),
                 "-q"]) == 0
    with Image.open(tmp_path / "out" / f"IMG_0001{suffix}") as out:
        exif = out.getexif()
        assert out.format == fmt and out.size == (96, 128)  # upright, in its own format
        assert exif[_MAKE] == "PhoneCam" and exif.get(_ORIENTATION, 1) == 1
        assert (exif.get_ifd(_EXIF_IFD)[_PIXEL_X], exif.get_ifd(_EXIF_IFD)[_PIXEL_Y]) == (96, 128)
        assert out.info.get("icc_profile") == _profile()
    # The pixels are the network's output, kept as well as a JPEG output keeps them (the encoders' defaults, quality
    # 50 for HEIF and 75 for AVIF, lose 2-5 dB more).
    got, want = read_image(tmp_path / "out" / f"IMG_0001{suffix}"), read_image(tmp_path / "ref" / "upright.png")
    write_image(tmp_path / "ref.jpg", want)
    as_jpeg = _psnr(read_image(tmp_path / "ref.jpg"), want)
    assert got.shape == want.shape and _psnr(got, want) > as_jpeg - 1, (_psnr(got, want), as_jpeg)


def test_without_pillow_heif_a_heic_is_refused_naming_the_extra(tmp_path, tiny_weights, monkeypatch, capsys):
    photo = tmp_path / "IMG_0002.heic"
    _phone_photo(photo, "HEIF")
    monkeypatch.setitem(__import__("sys").modules, "pillow_heif", None)  # as where it is not installed
    monkeypatch.setattr(image_formats, "_heif_registered", False)
    with pytest.raises(ImageReadError, match=r"IMG_0002.heic: a HEIF image .*pip install 'banet-deploy\[heif\]'"):
        read_image(photo)
    with pytest.raises(OSError, match=r"out.heic: a HEIF image .*pillow-heif"):
        write_image(tmp_path / "out.heic", STORED)
    assert main([str(photo), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err
    assert "pillow-heif" in err and "Traceback" not in err
    assert not (tmp_path / "out" / photo.name).exists()


def test_a_pillow_without_avif_is_named(tmp_path, monkeypatch):
    photo = tmp_path / "photo.avif"
    _phone_photo(photo, "AVIF")
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: name != "avif")
    with pytest.raises(ImageReadError, match=r"photo.avif: an AVIF image; this Pillow has no AVIF support"):
        read_image(photo)


def test_a_10_bit_heif_photo_keeps_its_depth_upright_with_its_metadata(tmp_path, tiny_weights, caplog):
    """A Canon's .hif or a phone's 10-bit HEIC: Pillow's plugin decoded 8 bits of it without a word, and the output
    was an 8-bit HEIF. Now it is read as 16-bit samples (10-bit 1023 is 65535) and written back as 10-bit HEIF."""
    pillow_heif.register_heif_opener()
    ramp = np.linspace(0, 65535, STORED.shape[1] * STORED.shape[0]).reshape(STORED.shape[:2])
    deep = (STORED.astype(np.float64) * 192 + ramp[..., None] / 4).astype(np.uint16)  # detail under 8 bits
    exif = Image.Exif()
    exif[_MAKE], exif[_ORIENTATION] = "HdrCam", 6
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(deep.shape[1], deep.shape[0]), data=deep.tobytes())
    heif.info["icc_profile"] = _profile()
    heif.save(tmp_path / "IMG_0003.hif", quality=-1, exif=exif.tobytes())
    assert pillow_heif.open_heif(tmp_path / "IMG_0003.hif").info["bit_depth"] == 10
    read, metadata = read_image_and_metadata(tmp_path / "IMG_0003.hif")
    upright = np.rot90(deep, -1)[..., ::-1].astype(np.float64)
    assert read.dtype == np.uint16 and read.shape == (128, 96, 3)
    assert 10 * np.log10(65535 ** 2 / np.mean((read - upright) ** 2)) > 35  # upright, at full 16-bit scale
    assert len(np.unique(read)) > 256  # more levels than 8 bits hold
    assert metadata.icc_profile == _profile()
    assert main([str(tmp_path / "IMG_0003.hif"), "-o", str(tmp_path / "out"), "--model", str(tiny_weights),
                 "-q"]) == 0
    written = pillow_heif.open_heif(tmp_path / "out" / "IMG_0003.hif", convert_hdr_to_8bit=False)
    assert written.info["bit_depth"] == 10 and written.size == (96, 128)
    assert written.info.get("icc_profile") == _profile()
    with Image.open(tmp_path / "out" / "IMG_0003.hif") as out:
        assert out.getexif()[_MAKE] == "HdrCam" and out.getexif().get(_ORIENTATION, 1) == 1
    got = read_image(tmp_path / "out" / "IMG_0003.hif")
    assert got.dtype == np.uint16 and len(np.unique(got)) > 256
    assert "8 bits" not in caplog.text
