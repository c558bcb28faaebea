"""``python -m serving.serve`` and ``serving.client`` start-up errors as users meet them: exactly one line on stderr,
no traceback, a non-zero exit code. Bad options are checked in-process (argparse stops before anything starts);
errors found while starting (model, ports, host) run the real command, all processes at once. A started server
stops on Ctrl-C with one line and exit code 130, and Triton's log lines stay off its console."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pytriton", reason="PyTriton comes with the serve extra")

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--http-port", "-1"], "--http-port"), (["--http-port", "70000"], "at most 65535"),
    (["--http-port", "x"], "whole number"), (["--metrics-port", "-1"], "--metrics-port"),
    (["--max-megapixels", "-1"], "--max-megapixels"), (["--max-megapixels", "nan"], "--max-megapixels"),
    (["--max-body-mb", "0"], "--max-body-mb"), (["--max-batch", "0"], "--max-batch"),
    (["--queue-size", "-1"], "--queue-size"), (["--deadline-s", "0"], "--deadline-s"),
    (["--deadline-s", "inf"], "--deadline-s"), (["--backend", "nope"], "--backend"),
])
def test_serve_refuses_bad_options_in_one_line(capsys, args, expected):
    from serving.serve import main

    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert expected in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("args, expected", [
    (["--timeout", "-1"], "--timeout"), (["--timeout", "0"], "--timeout"), (["--timeout", "x"], "--timeout"),
    (["--connect-timeout", "0"], "--connect-timeout"), (["--connect-timeout", "nan"], "--connect-timeout"),
])
def test_client_refuses_bad_timeouts_in_one_line(capsys, tmp_path, args, expected):
    from serving.client import main

    with pytest.raises(SystemExit) as info:
        main(["in.png", "--output", str(tmp_path / "out.png"), *args])
    assert info.value.code == 2
    assert expected in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


def test_client_ctrl_c_is_one_line_and_exit_130(capsys, tmp_path, monkeypatch):
    import serving.client

    def interrupted(args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serving.client, "deblur_file", interrupted)
    assert serving.client.main(["in.png", "--output", str(tmp_path / "out.png")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_serve_start_up_errors_are_one_line(tmp_path):
    bad_model = tmp_path / "garbage.onnx"
    bad_model.write_bytes(b"not an onnx file" * 10)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        cases = {
            "missing model": (["--http-port", "0", "--model", str(tmp_path / "missing.onnx")], "not found"),
            "bad model": (["--http-port", "0", "--model", str(bad_model)], "garbage.onnx"),
            "busy port": (["--http-port", str(busy.getsockname()[1])], "cannot listen"),
            "busy metrics port": (["--http-port", "0", "--metrics-port", str(busy.getsockname()[1])],
                                  "cannot use metrics port"),
            # 192.0.2.1 (TEST-NET): an address of no interface here, refused at once (no DNS)
            "bad host": (["--http-port", "0", "--host", "192.0.2.1"], "cannot listen on 192.0.2.1"),
        }
        procs = {name: subprocess.Popen([sys.executable, "-m", "serving.serve", *args,
                                         *([] if "metrics" in name else ["--no-metrics"])], cwd=tmp_path,
                                        env={**ENV, "TMPDIR": str(tmp_path)}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name, (args, _) in cases.items()}
        for name, proc in procs.items():
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 1, (name, stderr)
            assert cases[name][1] in _one_line(stderr), name
    assert not list(tmp_path.glob("banet-serve-*"))  # TMPDIR: the servers' temporary folders were made here


def test_ctrl_c_stops_a_running_server_with_one_line_and_exit_130(served, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "serving.serve", "--model", str(served.weights), "--http-port",
                             "0", "--no-metrics"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("serving banet") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "interrupted; server stopped"
    console = "".join(lines) + stdout
    assert "NVML" not in console and "Signal (2)" not in console, console
    assert not [line for line in console.splitlines() if line[:1] in "EWI" and line[1:5].isdigit()], console


def test_max_megapixels_reaches_the_deblurrer(monkeypatch, capsys):
    """``--max-megapixels 300`` lifts the Deblurrer's own 200 MP cap on arrays too, not only the front's check: an
    image the server accepted is never refused again inside the model call."""
    import runtime
    from serving.serve import main

    seen = {}

    def recording_deblurrer(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here: the options were recorded")

    monkeypatch.setattr(runtime, "Deblurrer", recording_deblurrer)
    assert main(["--http-port", "0", "--no-metrics", "--max-megapixels", "300"]) == 1
    assert seen["max_pixels"] == 300_000_000
    assert "stop here" in capsys.readouterr().err


def test_serve_refuses_a_folder_as_tritons_log(capsys, tmp_path):
    """Round 17: ``--triton-log /tmp`` started, Triton's log was lost and its errors said "see /tmp"."""
    from serving.serve import main

    assert main(["--triton-log", str(tmp_path)]) == 1
    assert f"--triton-log {tmp_path} is a folder; give a file name" in _one_line(capsys.readouterr().err)


def test_the_clients_pixel_limit_is_its_own_option(capsys, tmp_path):
    """Round 17: a decompression bomb's refusal told serving.client users to "raise the limit (--max-megapixels,
    ...)", an option it did not have."""
    import struct
    import zlib

    from serving.client import main

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert main([str(bomb), "--output", str(tmp_path / "out.png")]) == 1
    assert "over the limit of 200" in capsys.readouterr().err
    # raised, the header passes and the file is read (and refused for its missing image data, before any server)
    assert main([str(bomb), "--output", str(tmp_path / "out.png"), "--max-megapixels", "500"]) == 1
    assert "image data is cut short" in _one_line(capsys.readouterr().err)


def test_a_stop_while_triton_starts_is_held_until_it_is_up():
    """Round 17: SIGTERM or Ctrl-C in the 2-3 s Triton takes to start was raised inside PyTriton's start-up (gevent),
    which printed a traceback and a bare timestamp before the one line. Held now, and raised once it is up."""
    import signal

    from serving.serve import _signals_held

    previous = signal.getsignal(signal.SIGTERM)
    pending: list[int] = []
    with _signals_held(pending):  # the handlers called as the signals would (never sent to the test process)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # nothing raised here
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert pending == [signal.SIGTERM, signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_serve_without_pytriton_says_so_before_loading_the_model(capsys, monkeypatch):
    """Round 17: the thin install loaded the model ("Deblurrer ready") before saying PyTriton was missing."""
    import importlib.util

    import runtime
    from serving.serve import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    monkeypatch.setattr(runtime, "Deblurrer", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([]) == 1
    assert "PyTriton is not installed: pip install 'banet-deploy[serve]'" in _one_line(capsys.readouterr().err)
