"""SIGTERM stops ``serving.loadtest`` as Ctrl-C does: the server it started is stopped too, one line, exit 143.
Before, ``timeout`` killed the load test where it stood and its ``serving.serve`` (and that server's
tritonserver) ran on, orphaned."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_during_a_burst_stops_the_server_it_started(tmp_path):
    started = tmp_path / "server_pid"
    script = (
        "import os, signal, subprocess, sys, time\n"
        "import serving.loadtest as loadtest\n"
        "servers = []\n"
        "class Recorded(subprocess.Popen):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        servers.append(self)\n"
        "loadtest.subprocess.Popen = Recorded\n"
        "def terminated_while_waiting(proc, port):  # as `timeout` does, while the server starts\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)  # the handler raises before this ends\n"
        "loadtest._wait_ready = terminated_while_waiting\n"
        "status = loadtest.main(['--burst', '1'])\n"
        f"open({str(started)!r}, 'w').write(str(servers[0].poll()))\n"
        "sys.exit(status)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert done.returncode == 143, done.stderr  # before: -15, the server left running
    assert done.stderr.strip().splitlines()[-1].startswith("terminated (SIGTERM): the server it started was stopped")
    assert started.read_text() != "None"  # the serving.serve process it started has ended
