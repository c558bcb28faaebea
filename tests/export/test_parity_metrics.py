"""The project's one PSNR: identical inputs hit the cap, and a NaN or inf in an output can never score as a match."""

from __future__ import annotations

import math

import numpy as np

from export.parity import IDENTICAL_PSNR, psnr, psnr_db, psnr_from_mse


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
