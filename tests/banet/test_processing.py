"""The one pre/post-processing implementation: dtypes, channel order, padding, and refusals."""

import numpy as np
import pytest

from banet.conventions import BANET, Conventions
from banet.processing import (
    ImageFormatError,
    NonFiniteOutputError,
    pad_to_multiple,
    postprocess,
    preprocess,
)


def test_uint8_bgr_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    batch, padding = preprocess(image)
    assert batch.shape == (1, 3, 8, 12) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, :7, :11], image.transpose(2, 0, 1) / 255.0 - 0.5, atol=1e-7)
    out = postprocess(batch, padding, np.uint8)
    assert out.shape == (1, 7, 11, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], image)


def test_rgb_input_is_reordered_to_bgr_and_back() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255  # red in RGB
    batch, padding = preprocess(image, channel_order="RGB")
    assert batch[0, 2].max() == pytest.approx(0.5) and batch[0, 0].max() == pytest.approx(-0.5)
    np.testing.assert_array_equal(postprocess(batch, padding, np.uint8, channel_order="RGB")[0], image)


def test_uint16_and_float_inputs() -> None:
    image16 = np.full((4, 6, 3), 65535, np.uint16)
    batch, padding = preprocess(image16)
    assert np.allclose(batch, 0.5)
    assert postprocess(batch, padding, np.uint16).dtype == np.uint16
    imagef = np.full((4, 6, 3), 0.25, np.float32)
    batch, padding = preprocess(imagef)
    np.testing.assert_allclose(postprocess(batch, padding, np.float32)[0], imagef, atol=1e-7)


def test_output_is_clamped() -> None:
    batch = np.full((1, 3, 2, 2), 3.0, np.float32)
    batch[0, 0] = -3.0
    out = postprocess(batch, pad_to_multiple(batch, 2)[1], np.uint8)
    assert out[0, ..., 0].max() == 0 and out[0, ..., 1].min() == 255


def test_reflect_padding_and_one_pixel_edge_case() -> None:
    batch = np.arange(15, dtype=np.float32).reshape(1, 1, 3, 5)
    padded, padding = pad_to_multiple(batch, 2)
    assert padded.shape == (1, 1, 4, 6)
    np.testing.assert_array_equal(padded[0, 0, 3, :5], batch[0, 0, 1])  # reflect: row 3 mirrors row 1
    assert (padding.bottom, padding.right) == (1, 1)
    tiny, _ = pad_to_multiple(np.ones((1, 1, 1, 1), np.float32), 2)
    assert tiny.shape == (1, 1, 2, 2) and np.all(tiny == 1)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), np.uint8), "HxWx3"),
    (np.zeros((4, 4, 4), np.uint8), "HxWx3"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 3), np.int32), "unsupported image dtype"),
    (np.full((4, 4, 3), 255.0, np.float32), r"\[0, 1\]"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
])
def test_bad_images_are_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        preprocess(bad)


def test_non_finite_output_is_an_error() -> None:
    batch = np.zeros((1, 3, 2, 2), np.float32)
    batch[0, 1, 0, 0] = np.inf
    with pytest.raises(NonFiniteOutputError, match="NaN or Inf"):
        postprocess(batch, pad_to_multiple(batch, 2)[1])


def test_conventions_metadata_round_trip() -> None:
    meta = BANET.to_metadata()
    assert meta["banet.channel_order"] == "BGR" and meta["banet.size_multiple"] == "2"
    assert Conventions.from_metadata(meta) == BANET
    del meta["banet.offset"]
    with pytest.raises(KeyError, match="banet.offset"):
        Conventions.from_metadata(meta)


def test_float_rounding_just_outside_the_unit_range_is_clipped_not_refused() -> None:
    from banet.processing import UNIT_TOLERANCE, to_unit_range

    image = np.full((4, 4, 3), 0.5, np.float32)
    image[0, 0, 0] = np.nextafter(np.float32(1), np.float32(2))  # 1.0000001: float32 rounding of a computed 1.0
    image[0, 0, 1] = -np.float32(1e-7)
    kept = image.copy()
    # Before: "got values in [1, 1] (divide by 255 for 8-bit data)": refused, the overshoot hidden, a wrong hint.
    unit = to_unit_range(image)
    assert unit.min() == 0.0 and unit.max() == 1.0 and unit[0, 0, 2] == np.float32(0.5)
    np.testing.assert_array_equal(image, kept)  # the caller's array is not clipped in place
    assert np.isfinite(preprocess(image)[0]).all()
    assert UNIT_TOLERANCE == 1e-6


@pytest.mark.parametrize("value, shown, hint", [
    (1.0000012, "1.0000012", False),  # over the tolerance: refused, its real value shown (was "1")
    (-0.00002, "-2e-05", False),
    (1.2, "1.2", False),  # a slightly over-bright float image: no 8-bit hint
    (255.0, "255", True),  # 8-bit data passed as float: divide by 255
])
def test_out_of_range_floats_show_the_real_range_and_the_8bit_hint_only_for_8bit_data(value, shown, hint) -> None:
    image = np.full((4, 4, 3), 0.5, np.float64)
    image[1, 2, 0] = value
    with pytest.raises(ImageFormatError) as info:
        preprocess(image)
    message = str(info.value)
    assert shown in message and message.startswith("float images must be in [0, 1]; got values in [")
    assert ("divide by 255" in message) == hint, message
