"""Calibration data: shapes, determinism, the runtime's pre-processing, the cache, and clear errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from banet.processing import preprocess
from calibration.data import CalibrationDataError, CalibrationReader, CalibrationSource, list_images


def _write_images(folder: Path, sizes, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_builtin_shapes_range_and_determinism():
    source = CalibrationSource(count=5, size=(48, 64), batch=2, seed=3)
    batches = source.batches()
    assert [b.shape for b in batches] == [(2, 3, 48, 64), (2, 3, 48, 64), (1, 3, 48, 64)]
    assert all(b.dtype == np.float32 and b.min() >= -0.5 and b.max() <= 0.5 for b in batches)
    again = CalibrationSource(count=5, size=(48, 64), batch=2, seed=3).batches(use_cache=False)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = CalibrationSource(count=5, size=(48, 64), batch=2, seed=4).batches()
    assert not np.array_equal(batches[0], other[0])


def test_batches_are_the_runtime_preprocessing(tmp_path):
    _write_images(tmp_path / "photos", [(40, 50), (60, 70), (33, 41)])
    source = CalibrationSource(tmp_path / "photos", count=3, size=(32, 32), batch=3)
    expected, _ = preprocess(np.stack(source.images()))  # BGR uint8, as the runtime takes them
    np.testing.assert_array_equal(source.batches()[0], expected)


def test_cache_is_used_on_the_second_call(calibration_cache, monkeypatch):
    source = CalibrationSource(count=2, size=(32, 32), seed=11)
    first = source.images()
    assert list((calibration_cache / "calibration").glob("images-*.npz"))
    monkeypatch.setattr(CalibrationSource, "_builtin", lambda self: pytest.fail("recomputed despite the cache"))
    assert all(np.array_equal(a, b) for a, b in zip(first, source.images()))


def test_images_replaced_with_their_times_kept_are_read_again(tmp_path, calibration_cache):
    """The cache was keyed by name, size and modification time: images replaced by ``cp -p``, ``rsync -a`` or
    ``tar x`` (same sizes, old times) gave the old images' scales to a new INT8 file, without a word."""
    import os

    paths = _write_images(tmp_path / "photos", [(40, 50), (40, 50)], seed=1)
    for path in paths:
        os.utime(path, ns=(10**18, 10**18))
    source = CalibrationSource(tmp_path / "photos", count=2, size=(32, 32))
    first = source.images()
    _write_images(tmp_path / "photos", [(40, 50), (40, 50)], seed=2)  # other pixels, same names and sizes
    for path in paths:
        os.utime(path, ns=(10**18, 10**18))
    second = CalibrationSource(tmp_path / "photos", count=2, size=(32, 32)).images()
    assert not np.array_equal(first[0], second[0])
    assert all(np.array_equal(a, b) for a, b in zip(second, source.images(use_cache=False)))


def test_folder_sampling_is_seeded_sorted_and_sized(tmp_path):
    _write_images(tmp_path / "a", [(64, 80)] * 4, seed=1)
    _write_images(tmp_path / "a" / "sub", [(70, 90)] * 3, seed=2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert len(list_images(tmp_path / "a")) == 7
    crops = CalibrationSource(tmp_path / "a", count=4, size=(32, 48), seed=5).images(use_cache=False)
    again = CalibrationSource(tmp_path / "a", count=4, size=(32, 48), seed=5).images(use_cache=False)
    assert [c.shape for c in crops] == [(32, 48, 3)] * 4
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))
    resized = CalibrationSource(tmp_path / "a", count=2, size=(16, 16), mode="resize").images(use_cache=False)
    assert [r.shape for r in resized] == [(16, 16, 3)] * 2


def test_grey_and_16_bit_images_are_accepted(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "grey.png"), np.full((40, 40), 128, np.uint8))
    cv2.imwrite(str(folder / "deep.png"), np.full((40, 40, 3), 40000, np.uint16))
    batches = CalibrationSource(folder, count=2, size=(32, 32), batch=2).batches(use_cache=False)
    assert batches[0].shape == (2, 3, 32, 32)
    np.testing.assert_allclose(batches[0][0], 40000 / 65535 - 0.5, atol=1e-6)  # deep.png sorts first
    np.testing.assert_allclose(batches[0][1], 128 / 255 - 0.5, atol=1e-6)


def test_reader_feeds_onnxruntime_dicts():
    batches = [np.zeros((1, 3, 8, 8), np.float32), np.ones((1, 3, 8, 8), np.float32)]
    reader = CalibrationReader(batches, "input")
    assert len(reader) == 2
    items = list(iter(reader.get_next, None))
    assert [set(i) for i in items] == [{"input"}, {"input"}] and items[1]["input"].max() == 1
    assert reader.get_next() is None
    reader.rewind()
    reader.set_range(1, 2)
    assert reader.get_next()["input"].max() == 1 and reader.get_next() is None


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(CalibrationDataError, match="holds no images"):
        CalibrationSource(tmp_path / "empty").images()
    with pytest.raises(CalibrationDataError, match="does not exist"):
        CalibrationSource(tmp_path / "nowhere").images()


def test_unreadable_image_names_the_file(tmp_path):
    _write_images(tmp_path / "bad", [(40, 40)])
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(CalibrationDataError, match="broken.jpg"):
        CalibrationSource(tmp_path / "bad", count=2, size=(32, 32)).images(use_cache=False)


def test_image_smaller_than_the_calibration_size_is_refused(tmp_path):
    _write_images(tmp_path / "small", [(64, 64), (20, 100)])
    with pytest.raises(CalibrationDataError, match=r"img01.png is 20x100, smaller than the calibration size 32x32"):
        CalibrationSource(tmp_path / "small", count=2, size=(32, 32)).images(use_cache=False)


@pytest.mark.parametrize("kwargs, message", [({"size": (33, 32)}, "multiples of 2"), ({"count": 0}, "count"),
                                             ({"batch": 0}, "batch"), ({"mode": "stretch"}, "mode")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(CalibrationDataError, match=message):
        CalibrationSource(**kwargs)


def test_a_count_the_machine_cannot_hold_is_refused_before_any_image_is_made(monkeypatch, capsys):
    import calibration.data as data
    from calibration.quantize import main

    monkeypatch.setattr(data, "physical_memory", lambda: 10 ** 9)  # a 1 GB machine
    CalibrationSource(None, 32, (256, 256))  # 38 MB: fine
    with pytest.raises(CalibrationDataError, match=r"4000 calibration images of 256x256 would hold about 4.72 GB"):
        CalibrationSource(None, 4000, (256, 256))
    monkeypatch.setattr(data.CalibrationSource, "images", lambda *a, **k: pytest.fail("images were made"))
    # before: built image by image until the machine ran out of memory (1.9 GB and growing after 40 s)
    assert main(["--flavour", "ort", "--calib-count", "100000000", "--calib-size", "32x32"]) == 1
    err = capsys.readouterr().err
    assert "would hold about" in err and "lower --calib-count" in err and len(err.strip().splitlines()) == 1, err
