"""benchmarks.batch_throughput's parts: its photos are seeded and real-sized, and it reads serving.batch's summary."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from benchmarks.batch_throughput import make_photos, parse_size, steady_rate
from runtime.images import read_image

pytest.importorskip("skimage", reason="the held-out photos come with scikit-image: pip install '.[export]'")


def test_photos_are_seeded_blurred_crops(tmp_path):
    first = make_photos(tmp_path / "a", 3, 40, 60)
    again = make_photos(tmp_path / "b", 3, 40, 60)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    images = [read_image(p) for p in first]
    assert all(image.shape == (40, 60, 3) and image.dtype == np.uint8 for image in images)
    assert not np.array_equal(images[0], images[1])
    # Larger than the photo (astronaut is 512x512): resized up, not refused.
    (big,) = make_photos(tmp_path / "c", 1, 520, 530)
    assert read_image(big).shape == (520, 530, 3)


def test_reads_the_batch_summary():
    from serving.batch import summary

    rows = [dict(file=f"p{i}.png", status="ok", frames=1, seconds=0.5, worker="w", started=10.0 + i,
                 finished=10.5 + i) for i in range(4)]
    text = summary(rows, wall=12.0, timing={"start_up": 3.0}, output="out", results="out/r.csv")
    rate, span = steady_rate(text)
    assert span == pytest.approx(3.5) and rate == pytest.approx(4 / 3.5, abs=0.01)
    assert steady_rate("0 file(s): nothing") == (None, None)


def test_size_option():
    assert parse_size("512x384") == (512, 384)
    for bad, needle in (("512", "expected HxW"), ("8x8", "at least 16"), ("axb", "expected HxW"), ("16x15", "16")):
        with pytest.raises(argparse.ArgumentTypeError, match=needle):
            parse_size(bad)
