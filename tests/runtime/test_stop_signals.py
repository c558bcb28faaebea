"""SIGTERM and SIGHUP stop the commands as Ctrl-C does: one line, exit 143 or 129, no half-written output left (a
video's ``.partial.mp4`` was left behind without a word); a signal started ignored (nohup's SIGHUP) stays ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.stop_signals import run_stoppable


def _in_a_fresh_process(script: str) -> subprocess.CompletedProcess:
    """``script`` run by a new Python whose stop signals are at their default: a real signal is never sent to the
    test process itself, where a library started by other tests (Ray) may have taken the signal over."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=_default_stop_signals_in_child, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_ends_the_run_in_one_line(signum, status):
    result = _in_a_fresh_process(
        "import os, signal, sys, time\n"
        "from runtime.stop_signals import run_stoppable\n"
        "def run():\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    time.sleep(5)  # the handler raises before this ends\n"
        "    return 0\n"
        "status = run_stoppable(run, 'nothing was written')\n"
        f"assert signal.getsignal({int(signum)}) is signal.SIG_DFL  # the handler is gone again\n"
        "sys.exit(status)\n")
    assert result.returncode == status, result.stderr
    assert result.stderr == f"terminated ({signal.Signals(signum).name}): nothing was written\n"


def test_ctrl_c_still_says_interrupted(capsys):
    def run() -> int:
        raise KeyboardInterrupt

    assert run_stoppable(run, "the file in progress was not written") == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C): the file in progress was not written\n"


def test_an_ignored_signal_stays_ignored():
    result = _in_a_fresh_process(
        "import os, signal, time\n"
        "from runtime.stop_signals import Terminated, stop_signals_as_interrupts\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup's\n"
        "try:\n"
        "    with stop_signals_as_interrupts():\n"
        "        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN\n"
        "        os.kill(os.getpid(), signal.SIGHUP)  # nothing happens\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "except Terminated as exc:\n"
        "    assert exc.exit_status == 143 and exc.name == 'SIGTERM'\n"
        "    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN\n"
        "    print('stopped by SIGTERM only')\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped by SIGTERM only\n"


def _default_stop_signals_in_child() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def test_sigterm_mid_video_leaves_no_partial_file(tmp_path, tiny_weights):
    from tests.runtime.sample_videos import make_clip

    make_clip(tmp_path / "clip.mp4", frames=400, h=48, w=64)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "runtime", str(tmp_path / "clip.mp4"), "-o", str(out), "-q",
                                "--model", str(tiny_weights), "--backend", "onnxruntime", "--threads", "1"],
                               stderr=subprocess.PIPE, text=True, preexec_fn=_default_stop_signals_in_child,
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 120
    while not list(out.glob("*.partial*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the clip was done before it could be stopped: {process.stderr.read()}"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines() == ["terminated (SIGTERM): the file in progress was not written"]
    # before: clip.mp4.partial.mp4 left behind, exit 143 without a word; the output folder this run made, empty, is
    # removed too (round 17)
    assert not out.exists()
