"""SIGTERM stops the calibration commands as Ctrl-C does (runtime.stop_signals.stoppable): one line, exit 143, the
staged file removed. Before, ``timeout`` or ``docker stop`` killed them at once, an ``_int8_ort.partial.onnx``
left behind without a word."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_during_quantize_removes_the_staged_file_and_says_so_in_one_line(tiny_onnx, tmp_path):
    output = tmp_path / "out" / "tiny_int8.onnx"
    script = (
        "import os, pathlib, signal, sys, time\n"
        "import calibration.heldout as heldout\n"
        "from calibration.quantize import main\n"
        "def stopped_while_measuring(*args, **kwargs):  # the staged file is written by now\n"
        f"    assert list(pathlib.Path({str(output.parent)!r}).glob('*.partial*')), 'nothing staged'\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)  # the handler raises before this ends\n"
        "heldout.measure_heldout = stopped_while_measuring\n"
        f"sys.exit(main(['--onnx', {str(tiny_onnx)!r}, '--flavour', 'ort', '--calib-count', '2', '--calib-size', "
        f"'32x32', '--output', {str(output)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert done.returncode == 143, done.stderr  # before: -15, killed where it stood
    assert done.stderr.strip().splitlines()[-1] == "terminated (SIGTERM): the file in progress was not written"
    assert not list(output.parent.glob("*.partial*")) and not output.exists()
