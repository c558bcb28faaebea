"""A WebP photo keeps its colour profile, EXIF and XMP: written in WebP's extended format after OpenCV encoded the
pixels, which stay exactly those of the file written without them."""

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime import webp_chunks
from runtime.images import read_image, read_image_and_metadata, write_image
from tests.runtime.sample_images import random_image
from tests.runtime.test_image_metadata import _MAKE, _ORIENTATION, _exif, _profile
from tests.runtime.test_image_xmp import _packet, _property


@pytest.mark.parametrize("alpha", [False, True])
def test_profile_exif_and_xmp_reach_a_webp_output_upright(tmp_path, alpha):
    stored = random_image(40, 56)
    if alpha:
        stored = np.dstack([stored, np.full((40, 56), 200, np.uint8)])
    Image.fromarray(stored).save(tmp_path / "phone.webp", lossless=True, icc_profile=_profile(),
                                 exif=_exif(6, (56, 40)), xmp=_packet())
    pixels, metadata = read_image_and_metadata(tmp_path / "phone.webp")
    assert pixels.shape[:2] == (56, 40)  # turned upright when read
    write_image(tmp_path / "out.webp", pixels, metadata)
    write_image(tmp_path / "plain.webp", pixels)
    with Image.open(tmp_path / "out.webp") as out:
        assert out.info["icc_profile"] == _profile()  # before: none (a Display P3 photo shown as sRGB)
        assert out.getexif()[_ORIENTATION] == 1 and out.getexif()[_MAKE] == "BlurCam"
        assert _property(out.info["xmp"], "tiff:Orientation") == ["1"] and b"harbour at dawn" in out.info["xmp"]
        assert out.mode == ("RGBA" if alpha else "RGB") and out.size == (40, 56)
    assert np.array_equal(read_image(tmp_path / "out.webp"), read_image(tmp_path / "plain.webp"))
    assert np.array_equal(cv2.imread(str(tmp_path / "out.webp"), cv2.IMREAD_UNCHANGED), pixels)  # lossless


def test_what_does_not_parse_or_is_animated_is_left_as_it_is(tmp_path):
    assert webp_chunks.with_metadata(b"RIFF\x10\x00\x00\x00WEBPVP8L", 4, 4, False, icc=b"x") == \
        b"RIFF\x10\x00\x00\x00WEBPVP8L"
    frames = [Image.fromarray(random_image(8, 8, seed=i)) for i in range(2)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:])
    animated = (tmp_path / "anim.webp").read_bytes()
    assert webp_chunks.with_metadata(animated, 8, 8, False, icc=_profile()) == animated
