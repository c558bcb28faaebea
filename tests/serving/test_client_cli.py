"""``python -m serving.client`` as users run it: every failure is one line on stderr and exit code 1, quickly.
The subprocess runs start together (each pays ~2 s of interpreter and import start-up) and are checked one by
one; cases that need no fresh process call ``main`` in-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytriton", reason="PyTriton comes with the serve extra")

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_inputs(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    files = {"good": folder / "good.png", "16bit": folder / "16bit.png", "1x1": folder / "1x1.png",
             "truncated": folder / "truncated.png", "rgba": folder / "rgba.png"}
    cv2.imwrite(str(files["good"]), image)
    deep = image.astype(np.uint16) * 257 + rng.integers(0, 200, image.shape).astype(np.uint16)
    cv2.imwrite(str(files["16bit"]), deep)
    cv2.imwrite(str(files["1x1"]), image[:1, :1])
    files["truncated"].write_bytes(files["good"].read_bytes()[:300])
    cv2.imwrite(str(files["rgba"]), np.concatenate([image, rng.integers(0, 256, (24, 32, 1), dtype=np.uint8)], 2))
    return files


@pytest.fixture(scope="module")
def runs(served, tmp_path_factory):
    """Start every client run at once; return {case: (returncode, stdout, stderr, seconds, output path)}."""
    folder = tmp_path_factory.mktemp("client")
    files = _write_inputs(folder)
    cases = {
        "server down": [files["good"], "--url", f"127.0.0.1:{_free_port()}"],
        "unknown model": [files["good"], "--url", served.url, "--model", "nope"],
        "1x1": [files["1x1"], "--url", served.url],
        "truncated": [files["truncated"], "--url", served.url],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {}
    for name, args in cases.items():
        output = folder / f"out-{name.replace(' ', '-')}.png"
        command = [sys.executable, "-m", "serving.client", *map(str, args), "--output", str(output)]
        procs[name] = (subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True), time.perf_counter(), output)
    results = {}
    for name, (proc, started, output) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[name] = (proc.returncode, stdout, stderr, time.perf_counter() - started, output)
    return results, files


def _one_line_failure(result) -> str:
    code, _, stderr, seconds, output = result
    assert code == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not output.exists()
    return stderr.strip()


@pytest.mark.parametrize("case, expected", [("server down", "cannot reach a server"),
                                            ("unknown model", "unknown model 'nope'"),
                                            ("1x1", "too small"), ("truncated", "truncated")])
def test_failures_are_one_line_and_quick(runs, case, expected):
    results, _ = runs
    assert expected in _one_line_failure(results[case])
    assert results[case][3] < 30  # was 120 s (PyTriton's wait) when the server was down; ~3.5 s alone here


def test_16_bit_image_is_converted_with_a_note(tmp_path, capsys, served):
    from serving.client import main

    files = _write_inputs(tmp_path)
    output = tmp_path / "out.png"
    code = main([str(files["16bit"]), "--output", str(output), "--url", served.url])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and "wrote" in stdout, stderr
    assert "Traceback" not in stderr and "16-bit image converted to 8-bit" in stderr
    image16 = cv2.imread(str(files["16bit"]), cv2.IMREAD_UNCHANGED)
    expected = served.deblurrer(((image16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    np.testing.assert_array_equal(cv2.imread(str(output), cv2.IMREAD_UNCHANGED), expected)


def test_silent_server_times_out_after_connect_timeout(tmp_path, capsys):
    from serving.client import main

    files = _write_inputs(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        started = time.perf_counter()
        code = main([str(files["good"]), "--output", str(tmp_path / "out.png"), "--connect-timeout", "1",
                     "--url", f"127.0.0.1:{silent.getsockname()[1]}"])
        seconds = time.perf_counter() - started
    stderr = capsys.readouterr().err
    assert code == 1 and "no answer" in stderr and len(stderr.strip().splitlines()) == 1
    assert 0.9 < seconds < 5


def test_alpha_is_kept(tmp_path, capsys, served):
    from serving.client import main

    files = _write_inputs(tmp_path)
    output = tmp_path / "out.png"
    assert main([str(files["rgba"]), "--output", str(output), "--url", served.url]) == 0, capsys.readouterr().err
    rgba = cv2.imread(str(files["rgba"]), cv2.IMREAD_UNCHANGED)
    out = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(out[..., :3], served.deblurrer(np.ascontiguousarray(rgba[..., :3])))


def test_an_existing_output_is_kept_unless_force(tmp_path, capsys, served):
    from serving.client import main

    files = _write_inputs(tmp_path)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a photo of mine")
    linked = tmp_path / "linked.png"
    os.link(files["good"], linked)  # a hard link to the input: the same file under another name
    good = files["good"].read_bytes()
    for output, extra, needle in [(mine, [], "mine.png exists; pass --force"),  # was silently replaced
                                  (linked, ["--force"], "would overwrite the input"),  # was replaced too
                                  (tmp_path, ["--force"], "is a folder")]:
        assert main([str(files["good"]), "--output", str(output), "--url", served.url, *extra]) == 1
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert mine.read_bytes() == b"a photo of mine" and files["good"].read_bytes() == good
    assert main([str(files["good"]), "--output", str(mine), "--url", served.url, "--force"]) == 0
    assert cv2.imread(str(mine)).shape == (24, 32, 3)


def test_colour_profile_kept_unless_stripped(tmp_path, capsys, served):
    from PIL import Image

    from runtime.image_metadata import ImageMetadata
    from runtime.images import write_image
    from serving.client import main

    profile = bytes(range(256)) * 2
    source = tmp_path / "in.jpg"
    write_image(source, np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8),
                ImageMetadata(icc_profile=profile))
    for name, extra, expected in (("kept.jpg", [], profile), ("bare.jpg", ["--strip-metadata"], None)):
        assert main([str(source), "--output", str(tmp_path / name), "--url", served.url, *extra]) == 0, \
            capsys.readouterr().err
        with Image.open(tmp_path / name) as out:
            assert out.info.get("icc_profile") == expected


@pytest.mark.parametrize("url", ["host name:8000", "http://[::1", "127.0.0.1:99999"])
def test_a_malformed_server_address_is_one_line(tmp_path, capsys, url):
    from serving.client import main

    files = _write_inputs(tmp_path)
    assert main([str(files["good"]), "--output", str(tmp_path / "out.png"), "--url", url]) == 1
    err = capsys.readouterr().err
    # before: http.client.InvalidURL / "ValueError: Invalid IPv6 URL" tracebacks
    assert "invalid server address" in err and len(err.strip().splitlines()) == 1, err


def test_a_web_server_that_is_not_triton_is_named_as_such(tmp_path, capsys):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serving.client import main

    class WebPage(BaseHTTPRequestHandler):  # a single-page app's dev server: 200 and HTML for every path
        def do_GET(self):  # noqa: N802
            body = b"<!doctype html><title>app</title>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    files = _write_inputs(tmp_path)
    with ThreadingHTTPServer(("127.0.0.1", 0), WebPage) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            code = main([str(files["good"]), "--output", str(tmp_path / "out.png"),
                         "--url", f"127.0.0.1:{web.server_address[1]}"])
        finally:
            web.shutdown()
    err = capsys.readouterr().err
    assert code == 1 and "is not a Triton server" in err and len(err.strip().splitlines()) == 1, err  # a traceback
    assert not (tmp_path / "out.png").exists()


def test_an_output_format_that_cannot_be_written_is_refused_before_sending(tmp_path, capsys, monkeypatch):
    from serving.client import main

    monkeypatch.delenv("OPENCV_IO_ENABLE_OPENEXR", raising=False)
    files = _write_inputs(tmp_path)
    # no server at this address: the output is refused first (before: a traceback after the server's answer)
    code = main([str(files["good"]), "--output", str(tmp_path / "out.exr"), "--url", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot write .exr files" in err and len(err.strip().splitlines()) == 1, err
