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


def test_a_stop_while_the_libraries_load_is_one_line(tiny_onnx, tmp_path, monkeypatch, capsys):
    """SIGTERM or Ctrl-C in the first second (inside ``import torch``): the handler's ``command_errors()`` imported
    torch again, which crashed on the half-imported module, and two chained tracebacks came out (SIGTERM: exit 1).
    The stop is now handled before that; one cut short outside the handlers (the commands' own imports) is caught
    by ``stoppable``."""
    import pytest

    from calibration import cli_common, drift, quantize
    from runtime.stop_signals import Terminated, stoppable

    def cut_short(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    def broken_import():
        raise AttributeError("partially initialized module 'torch' has no attribute 'fx'")

    monkeypatch.setattr(quantize, "command_errors", broken_import)
    monkeypatch.setattr(quantize, "ensure_fp32_onnx", cut_short)
    assert quantize.main(["--weights", str(tmp_path / "w.safetensors"), "--flavour", "ort"]) == 143
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM): the file in progress was not written"
    monkeypatch.setattr(cli_common, "command_errors", broken_import)
    monkeypatch.setattr(cli_common, "ensure_fp32_onnx", cut_short)
    assert drift.main(["--onnx", str(tiny_onnx), "--output", str(tmp_path / "d"), "--no-speed"]) == 143
    assert capsys.readouterr().err.strip() == f"terminated (SIGTERM): no report written to {tmp_path / 'd'}"

    @stoppable
    def command() -> int:
        raise KeyboardInterrupt  # outside any handler of the command's own

    assert command() == 130
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C): stopped while starting; nothing was written"
    with pytest.raises(SystemExit):  # usage errors still leave as they do
        stoppable(lambda: (_ for _ in ()).throw(SystemExit(2)))()
