"""The EXIF thumbnail (IFD1's JPEG, which galleries and file browsers show) of a deblurred output shows the output:
made again from its upright pixels, every other EXIF byte where it was (maker notes keep their absolute offsets), or
dropped with one warning where it cannot be replaced safely. The EXIF blocks are built by hand, in both byte orders,
as cameras write them: an orientation 6 photo whose thumbnail is the stored (sideways, blurred) picture."""

import io
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from runtime.image_metadata import EXIF_HEADER, ImageMetadata, upright_exif
from runtime.images import read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image

_MAKE, _ORIENTATION, _XRES, _EXIF_IFD = 0x010F, 0x0112, 0x011A, 0x8769
_DATETIME_ORIGINAL, _MAKER_NOTE = 0x9003, 0x927C
_WIDTH, _LENGTH, _COMPRESSION, _STRIPS, _STRIP_BYTES = 0x0100, 0x0101, 0x0103, 0x0111, 0x0117
_THUMBNAIL, _THUMBNAIL_LENGTH = 0x0201, 0x0202
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 2, 3, 4, 5, 7
#: A record the maker note finds by its absolute offset (from the TIFF header), as Canon's and Nikon's do.
_LENS = b"LENS 12-40mm F2.8\0"
#: The stored photo: 128 wide, 96 high, orientation 6 (upright: 96 wide, 128 high); its thumbnail 32x24, stored too.
_STORED, _THUMBNAIL_SIZE = (96, 128), (32, 24)
_ROOT = Path(__file__).resolve().parents[2]


def _blocks(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An h x w RGB picture of 32-pixel blocks of random colours: its downscales are alike, unlike another's."""
    return np.kron(random_image(-(-h // 32), -(-w // 32), seed), np.ones((32, 32, 1), np.uint8))[:h, :w]


def _jpeg(rgb: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _directory(order: str, at: int, entries: list, next_at: int = 0) -> bytes:
    """A TIFF directory at offset ``at`` of (tag, type, count, value) entries: a value an int (one SHORT or LONG in
    the entry) or bytes (in the entry up to 4, else right after the directory)."""
    data_at = at + 2 + 12 * len(entries) + 4
    table, data = struct.pack(order + "H", len(entries)), b""
    for tag, kind, count, value in entries:
        if isinstance(value, int):
            field = struct.pack(order + ("H" if kind == _SHORT else "I"), value).ljust(4, b"\0")
        elif len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack(order + "I", data_at + len(data))
            data += value + bytes(len(value) % 2)
        table += struct.pack(order + "HHI", tag, kind, count) + field
    return table + struct.pack(order + "I", next_at) + data


def _camera_exif(order: str, thumbnail: bytes | None, middle: bool = False, after: bytes = b"") -> tuple[bytes, dict]:
    """A camera's EXIF block and where its parts lie: IFD0 (camera, orientation 6, resolution), the Exif directory
    (capture time, a maker note holding the lens record's absolute offset), IFD1 (orientation 6, the thumbnail's
    size, offset and length; None: IFD1 holds no thumbnail) and the thumbnail: last, as cameras write it (with two
    bytes of zero padding, as GIMP pads it to a word), or (``middle``) before the lens record and ``after``."""
    def ifd0(exif_at=0, ifd1_at=0):
        return _directory(order, 8, [(_MAKE, _ASCII, 8, b"BlurCam\0"), (_ORIENTATION, _SHORT, 1, 6),
                                     (_XRES, _RATIONAL, 1, struct.pack(order + "II", 300, 1)),
                                     (_EXIF_IFD, _LONG, 1, exif_at)], ifd1_at)

    def exif_ifd(at, lens_at=0):
        maker_note = b"BLURCAM\0" + struct.pack(order + "I", lens_at) + bytes(range(20))
        return _directory(order, at, [(_DATETIME_ORIGINAL, _ASCII, 20, b"2026:12:05 10:00:00\0"),
                                      (_MAKER_NOTE, _UNDEFINED, len(maker_note), maker_note)])

    def ifd1(at, thumbnail_at=0):
        entries = [(_COMPRESSION, _SHORT, 1, 6), (_ORIENTATION, _SHORT, 1, 6),
                   (_XRES, _RATIONAL, 1, struct.pack(order + "II", 72, 1))]
        if thumbnail is not None:
            entries += [(_WIDTH, _SHORT, 1, _THUMBNAIL_SIZE[0]), (_LENGTH, _LONG, 1, _THUMBNAIL_SIZE[1]),
                        (_THUMBNAIL, _LONG, 1, thumbnail_at), (_THUMBNAIL_LENGTH, _LONG, 1, len(thumbnail))]
        return _directory(order, at, entries)

    thumbnail_bytes = thumbnail or b""
    exif_at = 8 + len(ifd0())
    ifd1_at = exif_at + len(exif_ifd(exif_at))
    if middle:
        thumbnail_at = ifd1_at + len(ifd1(ifd1_at))
        lens_at = thumbnail_at + len(thumbnail_bytes) + len(thumbnail_bytes) % 2
        tail = thumbnail_bytes + bytes(len(thumbnail_bytes) % 2) + _LENS + after
    else:
        lens_at = ifd1_at + len(ifd1(ifd1_at))
        thumbnail_at = lens_at + len(_LENS)
        tail = _LENS + thumbnail_bytes + bytes(2)
    block = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8) + ifd0(exif_at, ifd1_at) \
        + exif_ifd(exif_at, lens_at) + ifd1(ifd1_at, thumbnail_at) + tail
    maker_note_at = exif_at + 2 + 12 * 2 + 4 + 20
    return block, dict(ifd1=ifd1_at, thumbnail=thumbnail_at, lens=lens_at, maker_note=maker_note_at, link=58)


def _entry(block: bytes, order: str, directory: int, tag: int) -> int:
    """Offset of the entry of ``tag`` in the directory at ``directory``."""
    (count,) = struct.unpack_from(order + "H", block, directory)
    return next(at for at in range(directory + 2, directory + 2 + 12 * count, 12)
                if struct.unpack_from(order + "H", block, at)[0] == tag)


def _photo(path: Path, order: str, middle: bool = False, after: bytes = b"") -> tuple[bytes, dict]:
    """An orientation 6 JPEG whose EXIF thumbnail is its stored picture, 32x24; its EXIF block and layout."""
    stored = _blocks(*_STORED)
    thumbnail = _jpeg(np.asarray(Image.fromarray(stored).resize(_THUMBNAIL_SIZE, Image.Resampling.BOX)), quality=75)
    block, layout = _camera_exif(order, thumbnail, middle, after)
    path.write_bytes(_jpeg(stored, quality=95, exif=EXIF_HEADER + block))
    return block, layout


def _exif_block(data: bytes) -> bytes:
    """The EXIF block of a JPEG (APP1) or PNG (eXIf) file."""
    if data.startswith(b"\xff\xd8"):
        at = 2
        while data[at + 1] != 0xE1 or data[at + 4:at + 10] != EXIF_HEADER:
            at += 2 + struct.unpack_from(">H", data, at + 2)[0]
        return data[at + 10:at + 2 + struct.unpack_from(">H", data, at + 2)[0]]
    at = data.index(b"eXIf") - 4
    return data[at + 8:at + 8 + struct.unpack_from(">I", data, at)[0]]


def _loaded(block: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(EXIF_HEADER + block)
    return exif


def _thumbnail_of(block: bytes) -> tuple[dict, np.ndarray]:
    """IFD1's tags (as Pillow reads them) and its thumbnail's decoded RGB pixels."""
    ifd1 = _loaded(block).get_ifd(ExifTags.IFD.IFD1)
    data = block[ifd1[_THUMBNAIL]:ifd1[_THUMBNAIL] + ifd1[_THUMBNAIL_LENGTH]]
    with Image.open(io.BytesIO(data)) as thumbnail:
        assert thumbnail.format == "JPEG" and not thumbnail.info.get("progressive")
        return ifd1, np.asarray(thumbnail.convert("RGB"))


def _downscale(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB of ``bgr`` at ``size``; a thumbnail of it differs by its JPEG's losses (4:2:2 chroma on random colours: a
    mean of 8 here), another picture's by 80."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).resize(size, Image.Resampling.LANCZOS))


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _tags(block: bytes) -> dict:
    """Every tag of IFD0 and the Exif directory but the orientation, the maker note whole."""
    exif = _loaded(block)
    return {**{tag: value for tag, value in exif.items() if tag != _ORIENTATION},
            **{("exif", tag): value for tag, value in exif.get_ifd(_EXIF_IFD).items()}}


@pytest.mark.parametrize("middle", [False, True], ids=["last", "middle"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_thumbnail_is_made_again_from_the_upright_output(tmp_path, order, middle):
    """The output's thumbnail was the input's: blurred, and sideways now that the photo is tagged upright."""
    block, layout = _photo(tmp_path / "photo.jpg", order, middle, after=b"more maker data" * 3)
    pixels, metadata = read_image_and_metadata(tmp_path / "photo.jpg")
    assert pixels.shape == (128, 96, 3)
    output = np.ascontiguousarray(_blocks(128, 96, seed=1)[..., ::-1])  # "deblurred": another picture, upright BGR
    upright = upright_exif(block)
    for suffix in (".jpg", ".png"):
        write_image(tmp_path / f"out{suffix}", output, metadata)
        write_image(tmp_path / f"bare{suffix}", output)
        data = (tmp_path / f"out{suffix}").read_bytes()
        written = _exif_block(data)
        ifd1, thumbnail = _thumbnail_of(written)
        # Upright like the output (3:4), within the old thumbnail's 32x24; it looks like the output, not the input.
        assert thumbnail.shape == (24, 18, 3), suffix
        assert ifd1[_ORIENTATION] == 1 and (ifd1[_WIDTH], ifd1[_LENGTH]) == (18, 24)
        assert ifd1[_COMPRESSION] == 6 and ifd1[_XRES] == 72
        assert _difference(thumbnail, _downscale(output, (18, 24))) < 12
        assert _difference(thumbnail, _downscale(pixels, (18, 24))) > 40
        # Every other tag as it was; every byte before the old thumbnail in place but IFD1's rewritten entries, so
        # the maker note still finds its lens record; the old thumbnail is gone.
        assert _tags(written) == _tags(block) and _loaded(written)[_ORIENTATION] == 1
        changed = {at for at in range(layout["thumbnail"]) if written[at] != upright[at]}
        assert changed and all(layout["ifd1"] < at < layout["ifd1"] + 2 + 12 * 7 for at in changed)
        (lens_at,) = struct.unpack_from(order + "I", written, layout["maker_note"] + 8)
        assert written[lens_at:lens_at + len(_LENS)] == _LENS
        if middle:  # appended: what followed the old one stays, the old one blanked
            assert written[layout["lens"]:len(block)] == block[layout["lens"]:]
            assert not any(written[layout["thumbnail"]:layout["lens"]]) and ifd1[_THUMBNAIL] >= len(block)
        else:  # in the old one's place, the padding after it gone
            assert ifd1[_THUMBNAIL] == layout["thumbnail"] == len(written) - ifd1[_THUMBNAIL_LENGTH]
        # Inserted after encoding: the pixels are those of the file written without metadata.
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(tmp_path / f"bare{suffix}"), cv2.IMREAD_UNCHANGED))


@pytest.mark.parametrize("pixels", [_blocks(128, 96)[..., 0], _blocks(128, 96).astype(np.uint16) * 257,
                                    np.dstack([_blocks(128, 96), np.full((128, 96, 1), 255, np.uint8)])],
                         ids=["grey", "16-bit", "alpha"])
def test_thumbnail_of_grey_16bit_and_alpha_outputs(tmp_path, pixels):
    """Every kind of output written makes a colour 8-bit thumbnail of what it shows (alpha left out)."""
    block, _ = _camera_exif(">", _jpeg(random_image(24, 32), quality=75))
    write_image(tmp_path / "out.png", pixels, ImageMetadata(exif=upright_exif(block)))
    _, thumbnail = _thumbnail_of(_exif_block((tmp_path / "out.png").read_bytes()))
    bgr = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., :3] // (
        257 if pixels.dtype == np.uint16 else 1)
    assert thumbnail.shape == (24, 18, 3)
    assert _difference(thumbnail, _downscale(bgr.astype(np.uint8), (18, 24))) < 12


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_exif_without_a_thumbnail_is_kept_but_for_the_orientations(tmp_path, order):
    """No IFD1: the block as read (orientation 1). An IFD1 that holds no picture: its own orientation set to 1 too,
    nothing else touched (it kept its 6)."""
    output = random_image(128, 96)
    plain = _directory(order, 8, [(_MAKE, _ASCII, 8, b"BlurCam\0"), (_ORIENTATION, _SHORT, 1, 6)])
    plain = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8) + plain + b"trailing data"
    (tmp_path / "plain.jpg").write_bytes(_jpeg(_blocks(*_STORED), exif=EXIF_HEADER + plain))
    write_image(tmp_path / "plain-out.jpg", output, read_image_and_metadata(tmp_path / "plain.jpg")[1])
    assert _exif_block((tmp_path / "plain-out.jpg").read_bytes()) == upright_exif(plain)

    block, layout = _camera_exif(order, None)
    (tmp_path / "ifd1.jpg").write_bytes(_jpeg(_blocks(*_STORED), exif=EXIF_HEADER + block))
    write_image(tmp_path / "ifd1-out.jpg", output, read_image_and_metadata(tmp_path / "ifd1.jpg")[1])
    written = _exif_block((tmp_path / "ifd1-out.jpg").read_bytes())
    ifd1 = _loaded(written).get_ifd(ExifTags.IFD.IFD1)
    assert ifd1 == {_COMPRESSION: 6, _ORIENTATION: 1, _XRES: 72.0}
    orientation = _entry(block, order, layout["ifd1"], _ORIENTATION) + 8
    upright = bytearray(upright_exif(block))
    upright[orientation:orientation + 2] = struct.pack(order + "H", 1)
    assert written == bytes(upright)


def _unsafe(order: str, case: str) -> tuple[bytes, dict]:
    """A camera block whose thumbnail cannot be replaced safely."""
    thumbnail = _jpeg(random_image(24, 32), quality=75)
    if case == "too large":  # appended, the block would be over the 64 KiB of a JPEG segment
        block, layout = _camera_exif(order, thumbnail, middle=True)
        return _camera_exif(order, thumbnail, middle=True, after=bytes(65527 - 40 - len(block)))
    block, layout = _camera_exif(order, thumbnail)
    block = bytearray(block)
    offset = _entry(block, order, layout["ifd1"], _THUMBNAIL) + 8
    if case == "thumbnail outside":
        block[offset:offset + 4] = struct.pack(order + "I", len(block) - 10)
    elif case == "IFD1 outside":
        block[layout["link"]:layout["link"] + 4] = struct.pack(order + "I", len(block) + 100)
    elif case == "over the maker note":
        block[offset:offset + 4] = struct.pack(order + "I", layout["maker_note"])
    elif case == "uncompressed":  # a TIFF thumbnail in strips
        for tag, new in ((_THUMBNAIL, _STRIPS), (_THUMBNAIL_LENGTH, _STRIP_BYTES)):
            at = _entry(block, order, layout["ifd1"], tag)
            block[at:at + 2] = struct.pack(order + "H", new)
    return bytes(block), layout


@pytest.mark.parametrize("case", ["thumbnail outside", "IFD1 outside", "over the maker note", "uncompressed",
                                  "too large"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
def test_thumbnail_that_cannot_be_replaced_safely_is_dropped_with_one_warning(tmp_path, caplog, order, case):
    block, layout = _unsafe(order, case)
    (tmp_path / "photo.jpg").write_bytes(_jpeg(_blocks(*_STORED), exif=EXIF_HEADER + block))
    pixels, metadata = read_image_and_metadata(tmp_path / "photo.jpg")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "out.jpg", pixels, metadata)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "EXIF thumbnail" in warned[0] and "written without it" in warned[0], warned
    data = (tmp_path / "out.jpg").read_bytes()
    written = _exif_block(data)
    assert written[layout["link"]:layout["link"] + 4] == bytes(4)  # IFD1 unlinked
    assert _loaded(written).get_ifd(ExifTags.IFD.IFD1) == {} and _tags(written) == _tags(block)
    assert written[:layout["link"]] == upright_exif(block)[:layout["link"]]
    if case == "too large":  # the old thumbnail's bytes blanked, what followed it kept
        end = layout["lens"]
        assert not any(written[layout["thumbnail"]:end]) and written[end:] == block[end:]
    with Image.open(io.BytesIO(data)) as out:
        out.verify()


def test_cli_end_to_end_writes_the_outputs_thumbnail(tmp_path, tiny_weights):
    """``python -m runtime`` on a camera photo: the output's thumbnail is upright and shows the output."""
    block, _ = _photo(tmp_path / "photo.jpg", "<")
    env = {**os.environ, "PYTHONPATH": str(_ROOT), "BANET_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "runtime", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"),
                    "--model", str(tiny_weights), "-q"], check=True, cwd=_ROOT, env=env, timeout=120)
    data = (tmp_path / "out" / "photo.jpg").read_bytes()
    ifd1, thumbnail = _thumbnail_of(_exif_block(data))
    output = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert output.shape == (128, 96, 3) and thumbnail.shape == (24, 18, 3) and ifd1[_ORIENTATION] == 1
    assert _difference(thumbnail, _downscale(output, (18, 24))) < 12
    assert _tags(_exif_block(data)) == _tags(block)
