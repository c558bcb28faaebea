"""runtime.host_memory: a Deblurrer turns NumPy's transparent-huge-page advice off for the process (large photos
stalled seconds in kernel compaction with it), unless the user set NumPy's own switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.host_memory import NUMPY_SWITCH, _numpy_setter, avoid_hugepage_stalls

REPO = Path(__file__).resolve().parents[2]
setter = _numpy_setter()
pytestmark = pytest.mark.skipif(setter is None, reason="this NumPy has no huge-page switch")


@pytest.fixture
def advice_on(monkeypatch):
    """NumPy's default (advice on) for the test, and the process's state put back after it."""
    monkeypatch.delenv(NUMPY_SWITCH, raising=False)
    before = setter(True)
    yield
    setter(before)


def test_turns_the_advice_off(advice_on):
    assert avoid_hugepage_stalls() is True
    assert setter(True) is False  # it was off


def test_the_users_choice_stands(advice_on, monkeypatch):
    monkeypatch.setenv(NUMPY_SWITCH, "1")
    assert avoid_hugepage_stalls() is False
    assert setter(True) is True  # still on


def test_a_deblurrer_turns_it_off_in_a_fresh_process(onnx_path):
    """In a process of its own (the switch is process-wide): NumPy's default before, off once a Deblurrer is
    made; with NUMPY_MADVISE_HUGEPAGE=1 set by the user, still on."""
    code = ("import numpy, sys\n"
            "from runtime.host_memory import _numpy_setter\n"
            "s = _numpy_setter()\n"
            "from runtime import Deblurrer\n"
            f"Deblurrer({str(onnx_path)!r}, backend='onnxruntime', threads=1)\n"
            "print(s(False))\n")
    env = {k: v for k, v in os.environ.items() if k != NUMPY_SWITCH}
    env["PYTHONPATH"] = str(REPO)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split()[-1] == "False"
    kept = subprocess.run([sys.executable, "-c", code], env={**env, NUMPY_SWITCH: "1"}, capture_output=True,
                          text=True, check=True)
    assert kept.stdout.split()[-1] == "True"
