"""The project's one PSNR: identical inputs hit the cap, and a NaN or inf in an output can never score as a match;
the 8-bit values two outputs give users, counted where they differ."""

from __future__ import annotations

import math

import numpy as np

from banet.conventions import BANET
from export.parity import IDENTICAL_PSNR, ParityReport, changed_8bit, judge, psnr, psnr_db, psnr_from_mse


def test_identical_inputs_score_the_cap_and_errors_score_below_it() -> None:
    a = np.linspace(0, 1, 48).reshape(4, 4, 3)
    assert psnr(a, a) == IDENTICAL_PSNR
    assert 30 < psnr(a, a + 0.01) < 50


def test_non_finite_outputs_fail_every_budget() -> None:
    a = np.zeros((2, 2, 3))
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[0, 0, 0] = bad
        assert psnr(a, b) == -math.inf
        assert not psnr(a, b) >= 0
    assert psnr_from_mse(float("nan")) == -math.inf
    raw = np.zeros((1, 3, 4, 4), np.float32)
    broken = raw.copy()
    broken[0, 0, 0, 0] = np.nan
    assert psnr_db(raw, broken) == -math.inf


def test_changed_8bit_counts_the_uint8_values_that_differ_and_by_how_many_levels() -> None:
    levels = np.array([10, 200, 255, 0, 77, 128], np.float32).reshape(1, 3, 1, 2)
    raw = levels / 255 + np.float32(BANET.offset)  # the network's output range
    assert changed_8bit(raw, raw.copy()) == (0, 0)
    moved = raw + np.array([-1, 0.4, 3, 3, 0, -0.4], np.float32).reshape(1, 3, 1, 2) / 255
    # 10 -> 9 and 0 -> 3 change; 200 + 0.4 and 128 - 0.4 round back; 255 + 3 is clipped to 255
    assert changed_8bit(raw, moved) == (2, 3)
    assert changed_8bit(moved, raw) == (2, 3)


def test_every_parity_shape_says_how_many_8bit_values_changed() -> None:
    levels = np.array([10, 200, 255, 0, 77, 128], np.float32).reshape(1, 3, 1, 2)
    raw = levels / 255 + np.float32(BANET.offset)
    moved = raw + np.array([-1, 0, 0, 3, 0, 0], np.float32).reshape(1, 3, 1, 2) / 255
    same, two = judge((1, 1, 2), raw, raw.copy(), 80.0, None), judge((1, 1, 2), raw, moved, 10.0, None)
    assert (same.changed_8bit, two.changed_8bit) == (0.0, 2 / 6)
    table = ParityReport("PyTorch", "ONNX Runtime", 10.0, None, [same, two]).table()
    assert "8-bit changed" in table and " 0.0000%  ok" in table and " 33.3333%  ok" in table
