"""A model process that dies is noticed: Triton neither restarts a Python model's stub killed under it (for memory,
say) nor reports it (its health endpoints stay 200 while every request fails with "Stub process ... is not
healthy"), so ``serving.triton_server`` watches the stubs and exits with one error line for a supervisor.

The watch itself runs on a stand-in server (a shell script whose child is named like the stub); the last test
kills the real stub under PyTriton's bundled ``tritonserver`` (skipped without it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from serving import triton_server
from serving.triton_server import STUB, TritonServer, model_processes
from tests.serving.helpers import child_pids

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def fake_server(tmp_path):
    """A "tritonserver" (shell) running two "stubs": this Python under the stub's name, with the stub's arguments."""
    stub = tmp_path / "backends" / "python" / STUB
    stub.parent.mkdir(parents=True)
    stub.symlink_to(sys.executable)  # /proc/PID/cmdline keeps the name it was started by
    script = tmp_path / "sleep.py"
    script.write_text("import os, time\nparent = os.getppid()\nwhile os.getppid() == parent:  # as a stub does\n"
                      "    time.sleep(0.1)\n")
    binary = tmp_path / "tritonserver"
    lines = ["#!/bin/sh"]
    for model in ("banet_ort", "banet_pre"):
        version = tmp_path / "repo" / model / "1"
        version.mkdir(parents=True)
        (version / "model.py").symlink_to(script)
        lines.append(f'{stub} {version / "model.py"} shm 1048576 1048576 $$ {stub.parent} 336 {model}_0_0 DEFAULT "" &')
    lines.append("wait")
    binary.write_text("\n".join(lines) + "\n")
    binary.chmod(0o755)
    process = subprocess.Popen([str(binary)], start_new_session=True)
    try:
        _wait_for(lambda: len(model_processes(process.pid)) == 2)
        yield process, binary, tmp_path
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_the_stubs_are_found_and_a_dead_one_is_named(fake_server, tmp_path):
    process, _, _ = fake_server
    found = model_processes(process.pid)
    assert [(p.model, p.instance) for p in found] == [("banet_ort", "banet_ort_0_0"), ("banet_pre", "banet_pre_0_0")]
    server = TritonServer(process, "127.0.0.1", 0, None, None, tmp_path / "t.log", None, "x", model_processes=found)
    assert server.dead_model() is None
    os.kill(found[0].pid, signal.SIGKILL)  # the shell does not reap it at once: a zombie is dead too
    dead = _wait_for(server.dead_model)
    assert dead == found[0]
    note = server.model_death_note(dead)
    assert "\n" not in note and f"banet_ort (instance banet_ort_0_0, pid {dead.pid}) died" in note


def test_a_replaced_stub_is_not_a_dead_one(fake_server, tmp_path):
    process, _, _ = fake_server
    found = model_processes(process.pid)
    server = TritonServer(process, "127.0.0.1", 0, None, None, tmp_path / "t.log", None, "x", model_processes=found)
    gone = found[0]
    server.model_processes[0] = triton_server.ModelProcess(2**22 + 1, gone.instance, gone.model)  # no such pid
    assert server.dead_model() is None and server.model_processes == found  # the live one of that instance


def test_the_launcher_exits_with_one_line_when_a_model_process_dies(fake_server, monkeypatch, capsys):
    """What the audit saw: the network's stub OOM-killed, the launcher silent and running, every request 500."""
    other, binary, tmp_path = fake_server
    from banet.triton_marker import RequestLimits

    (tmp_path / "repo" / "banet").mkdir()
    (tmp_path / "repo" / "banet" / "config.pbtxt").write_text('name: "banet"\nplatform: "ensemble"\n')
    monkeypatch.setattr(triton_server, "ensemble_limits", lambda repo, model: ("banet", RequestLimits(4, 10_000, 2)))
    monkeypatch.setattr(TritonServer, "wait_ready",  # as Triton: ready once every model instance is loaded
                        lambda self, timeout=0: _wait_for(lambda: len(model_processes(self.process.pid)) == 2))
    monkeypatch.setattr(TritonServer, "models", lambda self: [])
    monkeypatch.setattr(triton_server, "start_front",
                        lambda *args: types.SimpleNamespace(port=1, stop=lambda: None))
    result: list[int] = []
    launcher = threading.Thread(target=lambda: result.append(triton_server.main(
        [str(tmp_path / "repo"), "--http-port", "0", "--tritonserver", str(binary), "--log",
         str(tmp_path / "server.log")])), daemon=True)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main() runs in a thread here
    launcher.start()
    server_pid = _wait_for(lambda: [p for p in child_pids(os.getpid())
                                    if str(binary) in _cmdline(p) and p != other.pid])[0]  # the launcher's
    try:
        stubs = _wait_for(lambda: len(found := model_processes(server_pid)) == 2 and found)
        time.sleep(1.5)  # the launcher is serving
        assert launcher.is_alive()
        os.kill(next(p.pid for p in stubs if p.model == "banet_ort"), signal.SIGKILL)
        launcher.join(15)
    finally:
        if launcher.is_alive():  # never leave its server (and stubs) behind
            os.killpg(server_pid, signal.SIGKILL)
    assert not launcher.is_alive(), "the launcher kept running with a dead model process"
    assert result == [1]
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 1 and re.fullmatch(r"error: the model process of banet_ort \(instance banet_ort_0_0, "
                                             r"pid \d+\) died .*; not restarted", errors[0]), errors


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_killed_stub_under_the_real_server_stops_the_launcher(tmp_path):
    """The bundled tritonserver: kill the network's stub; before, the launcher ran on silently while every request
    got 500 "Stub process 'banet_ort_0_0' is not healthy" and /v2/health/ready stayed 200."""
    try:
        triton_server.find_bundled()
    except triton_server.TritonLaunchError as exc:
        pytest.skip(str(exc))
    torch = pytest.importorskip("torch", reason="exporting the test network needs PyTorch")
    from banet.config import BANetConfig
    from banet.model import BANet
    from export.onnx_export import ExportOptions, export_onnx
    from export.triton_repo import write_repository

    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval()
    onnx_file, _ = export_onnx(model, tmp_path / "tiny.onnx", ExportOptions(verify_shapes=[(1, 32, 32)]), "0" * 64,
                               "tiny", model.config)
    write_repository(onnx_file, tmp_path / "repo", threads=1)
    process = subprocess.Popen([sys.executable, "-m", "serving.triton_server", str(tmp_path / "repo"),
                                "--http-port", "0", "--timeout", "60", "--log", str(tmp_path / "t.log")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    server = None
    try:
        ready = process.stdout.readline()
        assert ready.startswith("serving "), ready + process.stderr.read() if process.poll() is not None else ready
        (server,) = child_pids(process.pid)
        stubs = {p.model: p.pid for p in model_processes(server)}
        assert set(stubs) == {"banet_ort", "banet_pre", "banet_post"}, stubs
        os.kill(stubs["banet_ort"], signal.SIGKILL)
        out, err = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            if server is not None:
                os.killpg(server, signal.SIGKILL)  # the server runs in a session of its own
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert process.returncode == 1 and len(errors) == 1, err[-2000:]
    assert re.match(r"error: the model process of banet_ort \(instance banet_ort_0_0, pid \d+\) died", errors[0])
    assert f"its log: {tmp_path / 't.log'}; not restarted" in errors[0]
    assert not child_pids(process.pid) and not child_pids(server)
