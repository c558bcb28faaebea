"""SIGTERM and SIGHUP stop the commands as Ctrl-C does: one line, exit 143 or 129, no half-written output left (a
video's ``.partial.mp4`` was left behind without a word); a signal started ignored (nohup's SIGHUP) stays ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.stop_signals import Terminated, run_stoppable, stop_signals_as_interrupts


@pytest.fixture
def default_stop_signals():
    """SIGTERM and SIGHUP at their default action, whatever this test process inherited; restored after."""
    inherited = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in inherited.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_ends_the_run_in_one_line(default_stop_signals, capsys, signum, status):
    def run() -> int:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        return 0

    assert run_stoppable(run, "nothing was written") == status
    assert capsys.readouterr().err == f"terminated ({signal.Signals(signum).name}): nothing was written\n"
    assert signal.getsignal(signum) is signal.SIG_DFL  # the handler is gone again


def test_ctrl_c_still_says_interrupted(capsys):
    def run() -> int:
        raise KeyboardInterrupt

    assert run_stoppable(run, "the file in progress was not written") == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C): the file in progress was not written\n"


def test_an_ignored_signal_stays_ignored(default_stop_signals):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup's
    with stop_signals_as_interrupts():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
        with pytest.raises(Terminated) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert info.value.exit_status == 143 and info.value.name == "SIGTERM"
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


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
    assert list(out.iterdir()) == []  # before: clip.mp4.partial.mp4 left behind, exit 143 without a word
