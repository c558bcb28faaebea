"""A PNG whose compressed image data holds fewer rows than its header's size is refused, never read with the missing
rows black (round 17)."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from runtime.images import ImageReadError, read_image
from runtime.png_chunks import png_data_short


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A whole PNG file (IHDR ... IEND) whose IDAT holds only ``rows`` rows of its ``height``."""
    samples = {0: 1, 2: 3}[colour_type]
    row = b"\x00" + bytes([200]) * ((width * samples * bit_depth + 7) // 8)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type,
                                                                  0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(row * rows)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("bit_depth, colour_type", [(8, 2), (1, 0), (16, 0)])
def test_image_data_cut_short_is_refused(tmp_path, bit_depth, colour_type):
    """Rows 30-99 of such a file were read as zeros and deblurred, exit 0 ("libpng error: Not enough image data"
    on stderr only)."""
    (tmp_path / "damaged.png").write_bytes(_png(100, 100, 30, bit_depth, colour_type))
    with pytest.raises(ImageReadError, match=r"damaged\.png: the PNG's image data is cut short \(it holds 30% of"):
        read_image(tmp_path / "damaged.png")
    (tmp_path / "whole.png").write_bytes(_png(100, 100, 100, bit_depth, colour_type))
    assert png_data_short((tmp_path / "whole.png").read_bytes()) is None
    assert read_image(tmp_path / "whole.png").shape[:2] == (100, 100)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
def test_whole_pngs_are_not_short(tmp_path, mode):
    array = np.random.default_rng(0).integers(0, 255, (37, 53, 4), np.uint8)
    image = Image.fromarray(array, "RGBA").convert(mode)
    image.save(tmp_path / "x.png")
    assert png_data_short((tmp_path / "x.png").read_bytes()) is None
