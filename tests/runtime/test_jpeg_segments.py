"""What a photo says about itself reaches its output: a JPEG's IPTC caption and copyright, comments and print
density; a PNG's text chunks and pHYs. Thumbnails of the blurred input do not."""

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from runtime import jpeg_segments
from runtime.cli import main
from runtime.images import read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image


def _resource(number: int, data: bytes, name: bytes = b"") -> bytes:
    """A Photoshop image resource: signature, ID, Pascal name padded to even, size, data padded to even."""
    pascal = bytes((len(name),)) + name
    pascal += b"\x00" * (len(pascal) % 2)
    padded = data + b"\x00" * (len(data) % 2)
    return b"8BIM" + struct.pack(">H", number) + pascal + struct.pack(">I", len(data)) + padded


def _iptc(caption: bytes, rights: bytes) -> bytes:
    """IPTC-IIM datasets 2:120 (caption) and 2:116 (copyright notice)."""
    return b"".join(b"\x1c\x02" + bytes((number,)) + struct.pack(">H", len(text)) + text
                    for number, text in ((120, caption), (116, rights)))


_CAPTION = _resource(0x0404, _iptc(b"Storm over the harbour", b"(c) 2026 A. Photographer"))
_THUMBNAIL = _resource(0x040C, b"\xff\xd8 a small JPEG of the blurred input \xff\xd9", name=b"thumb")
_OTHER = _resource(0x03ED, b"\x00\x48\x00\x00\x00\x01\x00\x01\x00\x48\x00\x00\x00\x01\x00\x01")  # resolution info


def _jpeg(app13: bytes | None = None, comment: bytes | None = None, density: tuple[int, int, int] = (1, 300, 300),
          pixels: np.ndarray | None = None) -> bytes:
    """A JPEG as a scanner or an agency's tool writes it: JFIF stating ``density``, APP13 resources, a comment."""
    ok, encoded = cv2.imencode(".jpg", random_image() if pixels is None else pixels)
    encoded = encoded.tobytes()
    assert encoded[6:11] == b"JFIF\x00"
    encoded = encoded[:13] + struct.pack(">BHH", *density) + encoded[18:]
    extra = b""
    if app13 is not None:
        payload = b"Photoshop 3.0\x00" + app13
        extra += b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    if comment is not None:
        extra += b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return encoded[:20] + extra + encoded[20:]


def _segments(data: bytes, marker: int) -> list[bytes]:
    return [payload for found, payload in jpeg_segments.segments(data) if found == marker]


def test_cli_keeps_iptc_comment_and_print_density_and_leaves_out_the_input_thumbnail(tmp_path, tiny_weights):
    source = tmp_path / "scan.jpg"
    source.write_bytes(_jpeg(_CAPTION + _THUMBNAIL + _OTHER, b"scanned at 300 dpi"))
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    written = (tmp_path / "out" / "scan.jpg").read_bytes()
    assert _segments(written, 0xED) == [b"Photoshop 3.0\x00" + _CAPTION + _OTHER]  # the thumbnail left out
    assert _segments(written, 0xFE) == [b"scanned at 300 dpi"]
    with Image.open(io.BytesIO(written)) as out:
        assert out.info["dpi"] == (300, 300)  # before: OpenCV's JFIF said aspect ratio only (72 dpi in print)
    assert main([str(source), "-o", str(tmp_path / "bare"), "--model", str(tiny_weights), "-q",
                 "--strip-metadata"]) == 0
    bare = (tmp_path / "bare" / "scan.jpg").read_bytes()
    assert not _segments(bare, 0xED) and not _segments(bare, 0xFE)


def test_resources_that_do_not_parse_are_copied_as_they_were_and_density_without_units_is_not_stated(tmp_path):
    broken = _CAPTION + b"8BIM\x04"  # cut short inside a resource's header
    source = tmp_path / "odd.jpg"
    source.write_bytes(_jpeg(broken, density=(0, 1, 1)))
    pixels, metadata = read_image_and_metadata(source)
    assert metadata.jfif_density is None  # an aspect ratio, not a print size
    write_image(tmp_path / "out.jpg", pixels, metadata)
    assert _segments((tmp_path / "out.jpg").read_bytes(), 0xED) == [b"Photoshop 3.0\x00" + broken]


def test_segments_stop_where_the_file_is_cut_short():
    whole = _jpeg(_CAPTION, b"note")
    markers = [marker for marker, _ in jpeg_segments.segments(whole)]
    assert 0xED in markers and 0xFE in markers and 0xDA not in markers  # up to the image data
    cut = whole[:20 + 4 + 10]  # inside the APP13 segment
    assert [marker for marker, _ in jpeg_segments.segments(cut)] == [0xE0]
    assert jpeg_segments.segments(b"not a jpeg") == []


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def test_png_text_chunks_and_density_are_carried_before_or_after_the_image_data(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "Harbour")
    info.add_text("Copyright", "(c) 2026 A. Photographer", zip=True)
    info.add_itxt("Description", "Sturm über dem Hafen", lang="de")
    buffer = io.BytesIO()
    Image.fromarray(random_image()).save(buffer, "PNG", pnginfo=info, dpi=(300, 300))
    data = buffer.getvalue()
    end = data.rindex(b"IEND") - 4  # a comment after the image data, and one whose checksum is wrong
    data = data[:end] + _chunk(b"tEXt", b"Comment\x00late") + _chunk(b"tEXt", b"Broken\x00x", crc=1) + data[end:]
    source = tmp_path / "photo.png"
    source.write_bytes(data)
    pixels, metadata = read_image_and_metadata(source)
    write_image(tmp_path / "out.png", pixels, metadata)
    with Image.open(tmp_path / "out.png") as out:
        out.load()
        assert out.info["dpi"] == (300, 300) or np.allclose(out.info["dpi"], 300, atol=0.01)
        text = out.text
    assert text["Title"] == "Harbour" and text["Copyright"] == "(c) 2026 A. Photographer"
    assert text["Description"] == "Sturm über dem Hafen" and text["Comment"] == "late"
    assert "Broken" not in text


def test_png_exif_text_chunk_is_not_copied_beside_the_exif_made_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    block = exif.tobytes()[6:]  # without the Exif header
    text = "\nexif\n" + f"{len(block):8d}\n" + block.hex()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", text)
    Image.fromarray(random_image()).save(tmp_path / "magick.png", pnginfo=info)
    pixels, metadata = read_image_and_metadata(tmp_path / "magick.png")
    write_image(tmp_path / "out.png", pixels, metadata)
    with Image.open(tmp_path / "out.png") as out:
        assert "Raw profile type exif" not in out.info  # its orientation 6 would turn the output again
        assert out.getexif()[0x0112] == 1
