"""Images handed to the API have the 200-megapixel cap of image files (runtime.images.DEFAULT_MAX_PIXELS),
refused in one ImageFormatError line from their size alone, before any copy is made.

Before: ``Deblurrer()(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (100000, 100000, 3)))`` (a view of 3 bytes)
failed with numpy's MemoryError ("Unable to allocate 9.31 GiB") from inside ``split_image``."""

import inspect
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from runtime import Deblurrer, ImageFormatError, OptionError
from runtime.images import DEFAULT_MAX_PIXELS, check_pixels, read_image, split_image


@pytest.fixture(scope="module")
def deblurrer(onnx_path):
    with Deblurrer(onnx_path, backend="onnxruntime", threads=1) as deblur:
        yield deblur


def huge(shape, dtype=np.uint8) -> np.ndarray:
    """A read-only view of ``shape`` backed by one pixel: no memory, any size."""
    return np.broadcast_to(np.zeros((1,) * len(shape), dtype), shape)


def refused(call) -> str:
    """The one line ``call`` is refused with, after checking it allocated (almost) nothing."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageFormatError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the refusal"
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_issue_array_is_one_line_naming_size_cap_and_the_way_out(deblurrer):
    message = refused(lambda: deblurrer(huge((100000, 100000, 3))))
    assert message.startswith("image of 100000x100000 pixels is 10000 megapixels, over the limit of 200 megapixels")
    assert "float32 (120 GB a copy" in message and "tiling" in message
    assert "Deblurrer(max_pixels=)" in message and "--max-megapixels" in message  # video frames: the CLI option


@pytest.mark.parametrize("shape, dtype", [
    ((20000, 10001), np.uint8),  # grey: would be repeated to 3 channels
    ((20000, 10001, 1), np.uint16),
    ((10001, 20000, 4), np.uint8),  # alpha: split off
    ((100000, 100000, 3), np.dtype(">u2")),  # big-endian: would be converted first
    ((100000, 100000, 3), np.float32),
])
def test_every_array_form_is_refused_before_any_copy(deblurrer, shape, dtype):
    message = refused(lambda: deblurrer(huge(shape, dtype)))
    assert f"image of {shape[0]}x{shape[1]} pixels" in message and "limit of 200 megapixels" in message


def test_a_list_names_the_image(deblurrer):
    small = np.zeros((8, 8, 3), np.uint8)
    message = refused(lambda: deblurrer.deblur_batch([small, huge((30000, 30000, 3))]))
    assert message.startswith("image 1 of the list: image of 30000x30000 pixels is 900 megapixels")


def test_the_cap_is_the_file_cap_and_can_be_raised_or_lifted(onnx_path):
    assert DEFAULT_MAX_PIXELS == 200_000_000
    assert inspect.signature(read_image).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS
    assert inspect.signature(split_image).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS
    check_pixels(10000, 20000)  # exactly 200 MP: taken
    with pytest.raises(ImageFormatError, match="10000x20001 pixels is 200.01 megapixels"):
        check_pixels(10000, 20001)
    check_pixels(100000, 100000, max_pixels=None)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (64, 64, 3), np.uint8)
    with Deblurrer(onnx_path, backend="onnxruntime", threads=1, max_pixels=64 * 64) as small:
        assert small.max_pixels == 64 * 64 and small(image).shape == image.shape
        message = refused(lambda: small(image[:, :63].copy().repeat(2, axis=0)))  # 128x63 = 8064 pixels
        assert "128x63 pixels is 0.008064 megapixels, over the limit of 0.004096 megapixels" in message
        # PIL images are measured from their size, before their pixels are read or converted (mode P -> RGB)
        message = refused(lambda: small(Image.new("P", (65, 64))))
        assert "64x65 pixels" in message
    with Deblurrer(onnx_path, backend="onnxruntime", threads=1, max_pixels=None) as unlimited:
        assert unlimited.max_pixels is None and unlimited(image).shape == image.shape


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "200", float("inf")])
def test_a_bad_max_pixels_is_an_option_error(value):
    with pytest.raises(OptionError, match="max_pixels must be a positive whole number of pixels or None"):
        Deblurrer(max_pixels=value)


def test_the_command_lines_max_megapixels_reaches_the_deblurrer():
    """``python -m runtime --max-megapixels 300`` (and serving.batch, which shares the options) lifts the API cap
    too: a 250 MP file it accepts from its header is not refused again by the Deblurrer."""
    import argparse

    from runtime.cli import add_deblur_options
    from runtime.options import deblurrer_options

    parser = argparse.ArgumentParser()
    add_deblur_options(parser)
    assert deblurrer_options(parser.parse_args(["--max-megapixels", "300"]))["max_pixels"] == 300_000_000
    assert deblurrer_options(parser.parse_args([]))["max_pixels"] == DEFAULT_MAX_PIXELS
