"""Metadata carried from input to output (runtime.image_metadata) against unusual and hostile files: EXIF orientation
in other forms, EXIF where other writers put it, profiles that do not fit the output, PNG colour chunks, oversized
profiles and PNG headers that must not cost a decode. Every output must stay pixel-exact and valid."""

import functools
import io
import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

import runtime.images
from runtime.image_metadata import EXIF_HEADER, ImageMetadata, upright_exif
from runtime.images import ImageReadError, read_image, read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image

_MAKE, _ORIENTATION = 0x010F, 0x0112
_SHORT, _LONG, _BYTE = 3, 4, 1


@functools.cache
def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _profile(space: bytes) -> bytes:
    """sRGB's profile with its data colour space (header bytes 16-19) set to ``space``."""
    profile = bytearray(_srgb())
    profile[16:20] = space
    return bytes(profile)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG file, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, found = 8, []
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert struct.unpack_from(">I", data, at + 8 + length)[0] == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        found.append((kind, body))
        at += 12 + length
    return found


def _with_png_chunks(png: bytes, before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    """``png`` (IHDR, IDAT..., IEND) with chunks added right after IHDR and right before IEND."""
    end = png.rindex(b"IEND") - 4
    return png[:33] + before_idat + png[33:end] + after_idat + png[end:]


def _tiff(order: str, entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A TIFF-structured EXIF block of one directory: (tag, type, count, 4-byte value field) entries."""
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    return head + struct.pack(order + "H", len(entries)) + b"".join(
        struct.pack(order + "HHI", tag, kind, count) + value for tag, kind, count, value in entries) + b"\0" * 4


def _exif_block(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[_MAKE] = "BlurCam"
    exif[_ORIENTATION] = orientation
    return exif.tobytes()[len(EXIF_HEADER):]


def _loaded_exif(block: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(EXIF_HEADER + block)
    return exif


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


# -- EXIF orientation in every form a reader takes ------------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
def test_orientation_in_any_form_is_set_upright_and_the_exif_kept(order, tmp_path):
    """A LONG orientation (Pillow turns the pixels by it), several values, a BYTE, two entries: the rest of the
    EXIF (here the camera) used to be dropped as malformed, or a second entry kept its old turn."""
    short = struct.pack(order + "H", 6) + b"\0\0"
    make = (_MAKE, 2, 4, b"Cam\x00")
    for orientation in ([(_ORIENTATION, _LONG, 1, struct.pack(order + "I", 6))],
                        [(_ORIENTATION, _SHORT, 2, struct.pack(order + "HH", 6, 6))],
                        [(_ORIENTATION, _BYTE, 1, b"\x06\0\0\0")],
                        [(_ORIENTATION, _SHORT, 1, struct.pack(order + "H", 1) + b"\0\0"),
                         (_ORIENTATION, _SHORT, 1, short)]):
        block = _tiff(order, [make, *orientation])
        upright = upright_exif(block)
        assert upright is not None and len(upright) == len(block)
        assert _loaded_exif(upright)[_ORIENTATION] == 1 and _loaded_exif(upright)[_MAKE] == "Cam"
        assert short not in upright[8:]  # no entry still holds the old turn
    # Through a photo: the pixels turned by the LONG 6, the output's EXIF says upright and keeps the camera.
    jpeg = _encoded(random_image(16, 24), "JPEG", exif=EXIF_HEADER + _tiff(order, [
        make, (_ORIENTATION, _LONG, 1, struct.pack(order + "I", 6))]))
    (tmp_path / "long.jpg").write_bytes(jpeg)
    pixels, metadata = read_image_and_metadata(tmp_path / "long.jpg")
    assert pixels.shape == (24, 16, 3) and metadata.exif is not None
    write_image(tmp_path / "out.jpg", pixels, metadata)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.getexif()[_ORIENTATION] == 1 and out.getexif()[_MAKE] == "Cam" and out.size == (16, 24)


# -- EXIF where other writers put it --------------------------------------------------------------------------------
def test_png_exif_with_a_jpeg_header_and_imagemagick_raw_profile_are_carried(tmp_path, caplog):
    """An eXIf chunk that holds "Exif\\0\\0" first, and ImageMagick's "Raw profile type exif" text: Pillow turns the
    pixels by both, but the EXIF was dropped as malformed (the first) or silently (the second)."""
    png = _encoded(random_image(16, 24), "PNG")
    block = _exif_block(6)
    text = f"\nexif\n{len(block) + 6:8d}\n{(EXIF_HEADER + block).hex()}\n"
    for name, chunk in (("header.png", _chunk(b"eXIf", EXIF_HEADER + block)),
                        ("magick.png", _chunk(b"tEXt", b"Raw profile type exif\0" + text.encode()))):
        (tmp_path / name).write_bytes(_with_png_chunks(png, chunk))
        with caplog.at_level(logging.WARNING):
            pixels, metadata = read_image_and_metadata(tmp_path / name)
        assert "malformed" not in caplog.text
        assert pixels.shape == (24, 16, 3) and metadata.exif is not None, name
        assert _loaded_exif(metadata.exif)[_ORIENTATION] == 1 and _loaded_exif(metadata.exif)[_MAKE] == "BlurCam"
        write_image(tmp_path / f"out-{name}", pixels, metadata)
        chunks = dict(_png_chunks((tmp_path / f"out-{name}").read_bytes()))
        assert chunks[b"eXIf"] == metadata.exif and chunks[b"eXIf"][:4] in (b"II*\x00", b"MM\x00*")


# -- PNG headers: no decode before the size is checked --------------------------------------------------------------
def test_png_header_is_read_without_decoding_its_pixels_and_a_late_exif_still_counts(tmp_path, monkeypatch):
    """Pillow's PNG getexif() decodes every pixel when the header has no eXIf: a 1 MB PNG of 20000x20000 took 1.5 GB
    and 3 s before its size was refused. The header must be read from the chunks alone."""
    from PIL import PngImagePlugin

    width, height = 3000, 2000  # all zeros: 20 KB of file, 18 MB to decode
    rows = zlib.compress(b"\0" * (1 + 3 * width) * height)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))
    late = tmp_path / "late.png"
    late.write_bytes(_with_png_chunks(_encoded(random_image(16, 24), "PNG"), after_idat=_chunk(b"eXIf",
                                                                                               _exif_block(6))))

    def no_decoding(self):
        raise AssertionError("the header read decoded the pixels")

    with monkeypatch.context() as patch:
        patch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
        with pytest.raises(ImageReadError, match="6 megapixels, over the limit of 1"):
            read_image(bomb, max_pixels=1_000_000)
        header = runtime.images._read_header(late.read_bytes(), "late.png")
    assert header.orientation == 6 and _loaded_exif(header.metadata.exif)[_ORIENTATION] == 1
    pixels, metadata = read_image_and_metadata(late)  # an eXIf after the image data: turned and carried
    assert pixels.shape == (24, 16, 3) and _loaded_exif(metadata.exif)[_MAKE] == "BlurCam"


def test_a_png_chunk_pillow_refuses_does_not_lift_the_size_limit(tmp_path):
    """A truncated gAMA makes Pillow refuse the whole header (libpng skips the chunk): the file was then decoded by
    OpenCV without its size ever being checked."""
    width, height = 3000, 2000
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                    + _chunk(b"gAMA", b"\x00\x01") + _chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width) * 2))
                    + _chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="over the limit of 1 "):
        read_image(bad, max_pixels=1_000_000)


# -- profiles --------------------------------------------------------------------------------------------------------
def test_profile_larger_than_pillows_png_limit(tmp_path, monkeypatch, caplog):
    """A 1.5 MB profile: Pillow refused the PNG's header (its 1 MiB chunk limit), so the orientation and profile were
    lost, and without OpenCV the photo failed to read. Written into a PNG, Pillow could not open the output."""
    profile = bytearray(_srgb() + np.random.default_rng(0).integers(0, 256, 1_500_000, np.uint8).tobytes())
    profile[:4] = struct.pack(">I", len(profile))
    profile = bytes(profile)
    source = tmp_path / "big.png"
    source.write_bytes(_with_png_chunks(_encoded(random_image(16, 24), "PNG"), _chunk(
        b"iCCP", b"ICC profile\0\0" + zlib.compress(profile)) + _chunk(b"eXIf", _exif_block(6))))
    pixels, metadata = read_image_and_metadata(source)
    assert pixels.shape == (24, 16, 3) and metadata.icc_profile == profile
    write_image(tmp_path / "out.jpg", pixels, metadata)  # JPEG holds it, split into segments
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.info["icc_profile"] == profile
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.png", pixels, metadata)
    assert "larger than PNG readers take" in caplog.text
    with Image.open(tmp_path / "out.png") as out:  # Pillow opens it: written without the profile, EXIF kept
        assert "icc_profile" not in out.info and out.getexif()[_MAKE] == "BlurCam"
    monkeypatch.setattr(runtime.images, "opencv", lambda: None)
    assert np.array_equal(read_image(source), pixels)


def test_profile_that_does_not_describe_the_written_pixels_is_dropped(tmp_path, caplog, capfd):
    """A grey profile on colour pixels (a grey PNG with alpha is read as BGRA; serving.client sends grey as colour),
    a CMYK JPEG's profile on the RGB it is read as, an RGB profile on grey pixels: each was written, and misdescribed
    the pixels (libpng: "Gray color space not permitted on RGB PNG"). Profiles that fit stay."""
    grey = random_image(16, 24)[..., 0]
    source = tmp_path / "grey-alpha.png"
    source.write_bytes(_encoded(np.stack([grey, grey], axis=2), "PNG", icc_profile=_profile(b"GRAY")))
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(random_image(16, 24)).convert("CMYK").save(cmyk, "JPEG", icc_profile=_profile(b"CMYK"))
    for path, shape, suffix in ((source, (16, 24, 4), ".png"), (cmyk, (16, 24, 3), ".jpg")):
        pixels, metadata = read_image_and_metadata(path)
        assert pixels.shape == shape and metadata.icc_profile is not None
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            write_image(tmp_path / f"out-{path.stem}{suffix}", pixels, metadata)
        assert "colour profile does not describe the colour pixels" in caplog.text
        with Image.open(tmp_path / f"out-{path.stem}{suffix}") as out:
            assert "icc_profile" not in out.info
    colour, rgb_on_grey = np.repeat(grey[..., None], 3, axis=2), ImageMetadata(icc_profile=_profile(b"RGB "))
    for name, pixels, metadata, kept in (("client.png", colour, ImageMetadata(icc_profile=_profile(b"GRAY")), False),
                                         ("grey.png", grey, rgb_on_grey, False), ("grey.jpg", grey, rgb_on_grey, False),
                                         ("fits.png", grey, ImageMetadata(icc_profile=_profile(b"GRAY")), True),
                                         ("fits.jpg", colour, rgb_on_grey, True)):
        write_image(tmp_path / name, pixels, metadata)
        with Image.open(tmp_path / name) as out:
            assert ("icc_profile" in out.info) == kept, name
        assert np.array_equal(cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED),
                              cv2.imdecode(cv2.imencode(name[-4:], pixels)[1], cv2.IMREAD_UNCHANGED))
    assert "libpng warning" not in capfd.readouterr().err


# -- PNG colour chunks -----------------------------------------------------------------------------------------------
def test_png_colour_chunks_are_carried_into_png_and_their_loss_elsewhere_said(tmp_path, caplog):
    """A PNG tagged by gAMA/cHRM (here linear light) or cICP instead of a profile showed as sRGB once deblurred."""
    gama, chrm = _chunk(b"gAMA", struct.pack(">I", 100000)), _chunk(b"cHRM", struct.pack(
        ">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    cicp, srgb = _chunk(b"cICP", bytes((9, 16, 0, 1))), _chunk(b"sRGB", b"\x00")
    png = _encoded(random_image(16, 24), "PNG")
    (tmp_path / "linear.png").write_bytes(_with_png_chunks(png, gama + chrm + cicp))
    pixels, metadata = read_image_and_metadata(tmp_path / "linear.png")
    write_image(tmp_path / "out.png", pixels, metadata)
    chunks = _png_chunks((tmp_path / "out.png").read_bytes())
    kinds = [kind for kind, _ in chunks]
    assert kinds[:4] == [b"IHDR", b"gAMA", b"cHRM", b"cICP"] and kinds.count(b"IDAT") >= 1
    with Image.open(tmp_path / "out.png") as out:
        assert out.info["gamma"] == 1.0 and out.info["chromaticity"][0] == 0.3127
    for suffix in (".jpg", ".webp"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            write_image(tmp_path / f"out{suffix}", pixels, metadata)
        assert "colours may show differently" in caplog.text
    # sRGB alone, or sRGB's own gamma, says nothing an untagged file does not: no warning; with a profile, the
    # profile wins and sRGB (which may not stand beside it) is left out.
    (tmp_path / "srgb.png").write_bytes(_with_png_chunks(png, srgb + _chunk(b"gAMA", struct.pack(">I", 45455))))
    pixels, metadata = read_image_and_metadata(tmp_path / "srgb.png")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "srgb.jpg", pixels, metadata)
        write_image(tmp_path / "srgb.webp", pixels, metadata)
    assert not caplog.text
    write_image(tmp_path / "both.png", pixels, ImageMetadata(_srgb(), None, metadata.png_colour))
    kinds = [kind for kind, _ in _png_chunks((tmp_path / "both.png").read_bytes())]
    assert b"sRGB" not in kinds and b"iCCP" in kinds and b"gAMA" in kinds


# -- every output valid ----------------------------------------------------------------------------------------------
def _jpeg_markers(data: bytes) -> list[int]:
    """The markers of a JPEG file up to its scan (SOS), each segment's length checked."""
    assert data[:2] == b"\xff\xd8"
    at, markers = 2, []
    while True:
        assert data[at] == 0xFF
        marker, (length,) = data[at + 1], struct.unpack_from(">H", data, at + 2)
        markers.append(marker)
        if marker == 0xDA:
            return markers
        at += 2 + length


@pytest.mark.parametrize("pixels", [random_image(16, 24), random_image(16, 24)[..., 0],
                                    np.dstack([random_image(16, 24), random_image(16, 24, 1)[..., :1]]),
                                    random_image(16, 24).astype(np.uint16) * 257],
                         ids=["colour", "grey", "alpha", "16-bit"])
def test_outputs_with_metadata_are_valid_and_pixel_exact(pixels, tmp_path, capfd):
    """Pillow verify(), OpenCV decodes the same pixels as without metadata, PNG chunks in order with good CRCs, JPEG
    segments after JFIF's APP0 and before the tables, no libpng warning."""
    grey = pixels.ndim == 2
    metadata = ImageMetadata(_profile(b"GRAY") if grey else _srgb(), _exif_block(1),
                             _chunk(b"gAMA", struct.pack(">I", 45455)))
    for suffix in (".png", ".jpg") if pixels.dtype == np.uint8 and (grey or pixels.shape[2] == 3) else (".png",):
        write_image(tmp_path / f"kept{suffix}", pixels, metadata)
        write_image(tmp_path / f"bare{suffix}", pixels)
        data = (tmp_path / f"kept{suffix}").read_bytes()
        with Image.open(io.BytesIO(data)) as out:
            out.verify()
        with Image.open(io.BytesIO(data)) as out:
            assert out.info["icc_profile"] == metadata.icc_profile and out.getexif()[_MAKE] == "BlurCam"
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(tmp_path / f"bare{suffix}"), cv2.IMREAD_UNCHANGED))
        if suffix == ".png":
            kinds = [kind for kind, _ in _png_chunks(data)]
            assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
            assert max(kinds.index(k) for k in (b"gAMA", b"iCCP", b"eXIf")) < kinds.index(b"IDAT")
        else:
            markers = _jpeg_markers(data)
            assert markers[:4] == [0xE0, 0xE1, 0xE2, 0xDB]  # JFIF, Exif, ICC, then the quantisation tables
    assert "libpng warning" not in capfd.readouterr().err


def test_cli_deblurs_every_odd_photo_with_its_metadata_fixed_or_dropped_in_one_line(tmp_path, tiny_weights, caplog):
    from runtime.cli import main

    photos = tmp_path / "in"
    photos.mkdir()
    make = (_MAKE, 2, 4, b"Cam\x00")
    (photos / "long.jpg").write_bytes(_encoded(random_image(16, 24), "JPEG", exif=EXIF_HEADER + _tiff(
        "<", [make, (_ORIENTATION, _LONG, 1, struct.pack("<I", 6))])))
    Image.fromarray(random_image(16, 24)).convert("CMYK").save(photos / "cmyk.jpg", icc_profile=_profile(b"CMYK"))
    grey = random_image(16, 24)[..., 0]
    (photos / "grey-alpha.png").write_bytes(_encoded(np.stack([grey, grey], axis=2), "PNG",
                                                     icc_profile=_profile(b"GRAY")))
    (photos / "header.png").write_bytes(_with_png_chunks(_encoded(random_image(16, 24), "PNG"), _chunk(
        b"eXIf", EXIF_HEADER + _exif_block(6))))
    with caplog.at_level(logging.WARNING):
        assert main([str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sorted(Path(w.split(": ")[0]).name for w in warned) == ["cmyk.jpg", "grey-alpha.png"], warned
    assert all("\n" not in w and "does not describe the colour pixels" in w for w in warned)
    for name, size in (("long.jpg", (16, 24)), ("header.png", (16, 24)), ("cmyk.jpg", (24, 16)),
                       ("grey-alpha.png", (24, 16))):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.size == size and "icc_profile" not in out.info, name
            assert name in ("cmyk.jpg", "grey-alpha.png") or out.getexif()[_ORIENTATION] == 1, name


# -- a format's own metadata into another format ------------------------------------------------------------------
def _with_own_metadata(path: Path, kind: str) -> None:
    """A photo in ``kind`` (saved under ``path``, whatever its extension says) with that format's own metadata: a
    JPEG's comment and density, a PNG's caption and pHYs, a TIFF's resolution."""
    from PIL import PngImagePlugin

    picture = Image.fromarray(random_image(24, 32)[..., ::-1])
    if kind == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Description", "my caption")
        picture.save(path, "PNG", pnginfo=text, dpi=(300, 300))
    else:
        picture.save(path, kind, dpi=(300, 300), **({"comment": b"my caption"} if kind == "JPEG" else {}))


@pytest.mark.parametrize("kind, suffix, lost", [
    ("PNG", ".jpg", "PNG text chunks and PNG print density (pHYs) are not written into JPEG files"),
    ("JPEG", ".png", "JPEG comments and JPEG print density are not written into PNG files"),
    ("TIFF", ".jpg", "TIFF print resolution is not written into JPEG files"),
    ("JPEG", ".tif", "JPEG comments and JPEG print density are not written into TIFF files"),
    ("PNG", ".avif", "PNG text chunks and PNG print density (pHYs) are not written into .avif files"),
    ("JPEG", ".webp", "JPEG comments and JPEG print density are not written into WebP files"),
])
def test_what_the_output_format_cannot_hold_is_named(tmp_path, caplog, kind, suffix, lost):
    """A PNG's caption and print density written as a JPEG (a mis-named file, or write_image with any name) were
    dropped without a word, as were a JPEG's comments into PNG, HEIF and AVIF, a TIFF's resolution into JPEG; TIFF
    outputs said IPTC "is not written into TIFF files (their ... IPTC ... are)"."""
    _with_own_metadata(tmp_path / "in", kind)
    pixels, metadata = read_image_and_metadata(tmp_path / "in")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"out{suffix}", pixels, metadata)
    assert f"out{suffix}: the input's {lost}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # into its own format: all of it kept, no warning
        write_image(tmp_path / f"same.{kind.lower()}", pixels, metadata)
    assert "not written" not in caplog.text
