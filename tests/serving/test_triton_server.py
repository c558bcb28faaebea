"""The generated repository on a real Triton server: PyTriton's bundled ``tritonserver``, started by
``serving.triton_server`` on loopback, serves the whole ensemble (uint8 image in, uint8 image out).

Every answer is compared with ``Deblurrer`` on the same ONNX file; bad and hostile requests (huge declared
shapes, values out of range, tiny images...) are refused by the launcher's validating front, or by Triton and the
pre-processing model behind it, and the server keeps serving; the server stops cleanly (exit code 0, ports
closed, no shared memory left behind). One server for the module (the command-line tests start their own).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from serving.triton_server import TritonLaunchError, find_bundled, main, start

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient comes with the serve extra")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient comes with the serve extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.serving.helpers import assert_clean_refusal, binary_request, child_pids, json_request, post  # noqa: E402

MIN_PSNR = 60.0
MAX_BATCH = 4
MAX_PIXELS = 64 * 64  # small, so an image over the limit is cheap to send; the photos are at most 48x64


def _bundled_or_skip():
    try:
        return find_bundled()
    except TritonLaunchError as exc:
        pytest.skip(str(exc))


def photos() -> list[np.ndarray]:
    """Three real photos (scikit-image's samples) cropped to three sizes, one of them odd; uint8 BGR."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photos")
    crops = ((data.astronaut(), (30, 180), (48, 64)), (data.chelsea(), (60, 150), (37, 53)),
             (data.coffee(), (100, 200), (64, 40)))
    return [np.ascontiguousarray(photo[y:y + h, x:x + w, ::-1]) for photo, (y, x), (h, w) in crops]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def onnx_file(one_bam_onnx) -> Path:
    return one_bam_onnx


@pytest.fixture(scope="module")
def expected(onnx_file):
    from runtime import Deblurrer

    with Deblurrer(onnx_file, backend="onnxruntime", threads=1) as deblurrer:
        return [deblurrer(image) for image in photos()]


@pytest.fixture(scope="module")
def server(tmp_path_factory, onnx_file):
    _bundled_or_skip()
    from export.triton_repo import write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(onnx_file, repo, max_batch=MAX_BATCH, threads=1, max_pixels=MAX_PIXELS)
    running = start(repo, http_port=0, grpc_port=0, timeout=90)
    yield running
    assert running.stop() == 0, running.log_tail()
    for port in (running.http_port, running.triton_port, running.grpc_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening after stop()"
    assert not list(Path("/dev/shm").glob(f"{running.shm_prefix}*"))


def _http_infer(client, image: np.ndarray, datatype: str = "UINT8", name: str = "image", model: str = "banet"):
    tensor = httpclient.InferInput(name, list(image.shape), datatype)
    tensor.set_data_from_numpy(image)
    return client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput("deblurred")])


def test_every_model_is_ready(server):
    states = {m["name"]: m["state"] for m in server.models()}
    assert states == {"banet": "READY", "banet_ort": "READY", "banet_pre": "READY", "banet_post": "READY"}
    assert server.url.startswith("127.0.0.1:") and server.http_port != server.triton_port
    assert (server.model, server.limits.max_batch, server.limits.max_pixels) == ("banet", MAX_BATCH, MAX_PIXELS)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_photos_match_the_deblurrer(server, expected, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.url if protocol == "http" else server.grpc_url)
    try:
        assert client.is_model_ready("banet")
        for image, reference in zip(photos(), expected):
            tensor = module.InferInput("image", [1, *image.shape], "UINT8")
            tensor.set_data_from_numpy(image[None])
            out = client.infer("banet", [tensor]).as_numpy("deblurred")
            assert out.dtype == np.uint8 and out.shape == (1, *image.shape)
            assert psnr(out[0], reference) >= MIN_PSNR, (protocol, image.shape)
            assert psnr(out[0], image) < 50, "the network changed nothing: the comparison would prove little"
    finally:
        client.close()


def test_concurrent_requests_each_get_their_own_answer(server, onnx_file):
    """15 same-sized requests in flight at once: the dynamic batcher may group them; each answer is still its own."""
    images = photos()
    batch = [np.ascontiguousarray(np.roll(images[0], shift, axis=1)) for shift in range(0, 60, 4)]
    from runtime import Deblurrer

    with Deblurrer(onnx_file, backend="onnxruntime", threads=1) as deblurrer:
        references = [deblurrer(image) for image in batch]
    client = httpclient.InferenceServerClient(server.url, concurrency=8)
    try:
        pending = []
        for image in batch:
            tensor = httpclient.InferInput("image", [1, *image.shape], "UINT8")
            tensor.set_data_from_numpy(image[None])
            pending.append(client.async_infer("banet", [tensor]))
        outs = [p.get_result().as_numpy("deblurred")[0] for p in pending]
    finally:
        client.close()
    private = httpclient.InferenceServerClient(server.triton_url)  # the front shows the ensemble only
    try:
        stats = private.get_inference_statistics("banet_ort")["model_stats"][0]
    finally:
        private.close()
    assert all(psnr(out, ref) >= MIN_PSNR for out, ref in zip(outs, references))
    assert int(stats["inference_count"]) >= len(batch)


BAD_REQUESTS = [
    ("float32 pixels", np.zeros((1, 8, 8, 3), np.float32), "FP32", "image"),
    ("four channels", np.zeros((1, 8, 8, 4), np.uint8), "UINT8", "image"),
    ("no batch dimension", np.zeros((8, 8, 3), np.uint8), "UINT8", "image"),
    ("empty image", np.zeros((1, 0, 8, 3), np.uint8), "UINT8", "image"),
    ("batch over max_batch_size", np.zeros((MAX_BATCH + 1, 8, 8, 3), np.uint8), "UINT8", "image"),
    ("wrong input name", np.zeros((1, 8, 8, 3), np.uint8), "UINT8", "picture"),
]


def test_bad_requests_are_refused_and_the_server_keeps_serving(server, expected):
    client = httpclient.InferenceServerClient(server.url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    image = photos()[1]
    try:
        for what, array, datatype, name in BAD_REQUESTS:
            with pytest.raises(InferenceServerException) as caught:
                _http_infer(client, array, datatype, name)
            message = caught.value.message()
            assert message and "Traceback" not in message, what
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            with pytest.raises(InferenceServerException):
                grpc.infer("banet", [tensor])
        with pytest.raises(InferenceServerException, match="banet_missing"):
            _http_infer(client, image[None], model="banet_missing")
        # Malformed bodies: the front answers with a one-line JSON error.
        for body, headers in ((b"{not json", {}), (b"\x00" * 64, {"Inference-Header-Content-Length": "4000"})):
            assert_clean_refusal(*post(server.http_port, body, headers)[:2], what=repr(body[:10]))
        # Still serving, still right.
        assert client.is_server_ready() and client.is_model_ready("banet")
        out = _http_infer(client, image[None]).as_numpy("deblurred")[0]
        assert psnr(out, expected[1]) >= MIN_PSNR
    finally:
        client.close()
        grpc.close()


def _huge_binary() -> tuple[bytes, dict[str, str]]:
    """A binary-tensor request declaring 100000x100000 pixels and carrying 12 bytes."""
    body, headers = binary_request(np.zeros((1, 2, 2, 3), np.uint8), declared=12)
    header = body[:int(headers["Inference-Header-Content-Length"])].replace(b"[1, 2, 2, 3]", b"[1, 100000, 100000, 3]")
    return header + body[-12:], {**headers, "Inference-Header-Content-Length": str(len(header))}


#: (what, body, headers): the issue's 150-byte request and variations; each must get a clean 4xx from the front.
HOSTILE = [
    ("the 150-byte request", json_request([1, 100000, 100000, 3], list(range(12))), {}),
    ("a trillion pixels", json_request([1, 1000000, 1000000, 3], [0] * 12), {}),
    ("a 2**40 side", json_request([1, 2 ** 40, 1, 3], [0] * 12), {}),
    ("a huge batch", json_request([100000, 100, 100, 3], [0] * 12), {}),
    ("a negative side", json_request([1, -1, 4, 3], [0] * 12), {}),
    ("a negative batch", json_request([-1, 2, 2, 3], [0] * 12), {}),
    ("fewer values than the shape", json_request([1, 4, 4, 3], [0] * 12), {}),
    ("more values than the shape", json_request([1, 2, 2, 3], [0] * 48), {}),
    ("FP32 datatype", json_request([1, 2, 2, 3], [0.5] * 12, datatype="FP32"), {}),
    ("UINT16 datatype", json_request([1, 2, 2, 3], [0] * 12, datatype="UINT16"), {}),
    ("UINT8 value 300", json_request([1, 2, 2, 3], [300] * 12), {}),
    ("UINT8 value -1", json_request([1, 2, 2, 3], [-1] * 12), {}),
    ("a 1x1 image", json_request([1, 1, 1, 3], [7] * 3), {}),
    ("a 1x9 image", json_request([1, 1, 9, 3], [7] * 27), {}),
    ("a 9x1 image", json_request([1, 9, 1, 3], [7] * 27), {}),
    ("a batch over max_batch_size", json_request([MAX_BATCH + 1, 2, 2, 3], [0] * (MAX_BATCH + 1) * 12), {}),
    ("an image over the pixel limit", *binary_request(np.zeros((1, 65, 64, 3), np.uint8))),
    ("a binary tensor declaring a huge shape", *_huge_binary()),
    ("binary_data_size over the data", *binary_request(np.zeros((1, 2, 2, 3), np.uint8), declared=4000)),
]


def test_hostile_requests_leave_the_server_serving(server, expected):
    """The issue's crash and its variations: refused in one line, the server still alive and still right."""
    assert len(HOSTILE[0][1]) <= 150
    for what, body, headers in HOSTILE:
        status, answer, _ = post(server.http_port, body, headers)
        assert_clean_refusal(status, answer, what)
        assert server.process.poll() is None, f"{what} killed the server: {server.log_tail()}"
    # The pre-processing model refuses what reaches Triton another way (its private port: too small, too large).
    for shape in ((1, 1, 1, 3), (1, 65, 64, 3)):
        status, answer, _ = post(server.triton_port, *binary_request(np.zeros(shape, np.uint8)))
        assert status == 400 and ("too small" in answer.decode() or "over the server's limit" in answer.decode())
    # gRPC (Triton's own, unfronted): a declared shape the data does not fill, a batch too large, a 1x1 image.
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for data, shape in ((np.zeros((1, 2, 2, 3), np.uint8), [1, 100000, 100000, 3]),
                            (np.zeros((MAX_BATCH + 1, 2, 2, 3), np.uint8), None),
                            (np.zeros((1, 1, 1, 3), np.uint8), None)):
            tensor = grpcclient.InferInput("image", list(data.shape), "UINT8")
            tensor.set_data_from_numpy(data)
            if shape:
                tensor.set_shape(shape)
            with pytest.raises(InferenceServerException):
                grpc.infer("banet", [tensor])
    finally:
        grpc.close()
    assert server.process.poll() is None, server.log_tail()
    client = httpclient.InferenceServerClient(server.url)
    try:
        for image, reference in zip(photos(), expected):
            out = _http_infer(client, image[None]).as_numpy("deblurred")[0]
            assert psnr(out, reference) >= MIN_PSNR
    finally:
        client.close()


# -- the launcher's refusals -----------------------------------------------------------------------------------
def test_a_busy_port_is_refused_with_one_line(tmp_path, onnx_file):
    from export.triton_repo import write_repository

    write_repository(onnx_file, tmp_path / "repo")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TritonLaunchError, match=f"HTTP port 127.0.0.1:{port} is busy") as caught:
            start(tmp_path / "repo", http_port=port, grpc_port=0)
    assert "\n" not in str(caught.value)


def test_a_port_given_twice_is_refused_not_moved(tmp_path, onnx_file):
    from export.triton_repo import write_repository
    from serving.front import free_port

    write_repository(onnx_file, tmp_path / "repo")
    port = free_port("127.0.0.1")
    # before: the metrics (or gRPC) port was moved to a random one without a word
    for ports, other in (({"http_port": port}, "HTTP"), ({"http_port": 0, "grpc_port": port}, "gRPC")):
        with pytest.raises(TritonLaunchError, match=f"--metrics-port {port} is also the {other} port"):
            with start(tmp_path / "repo", metrics_port=port, **ports):  # started after all: stopped again
                pass


def test_cli_refuses_a_missing_repository(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--http-port", "0", "--grpc-port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not found" in err and "export/to_triton.py" in err


def test_missing_tritonserver_names_the_extra(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(TritonLaunchError, match=r"banet-deploy\[serve\]"):
        find_bundled()


def test_a_server_that_dies_shows_the_end_of_its_log(tmp_path, onnx_file):
    """The onnxruntime flavour needs a backend the bundled server lacks: it exits, and the error says why."""
    _bundled_or_skip()
    from export.triton_repo import write_repository

    write_repository(onnx_file, tmp_path / "repo", flavour="onnxruntime", threads=1)
    with pytest.raises(TritonLaunchError) as caught:
        start(tmp_path / "repo", http_port=0, grpc_port=0, timeout=60, log_path=tmp_path / "server.log")
    message = str(caught.value)
    assert message.startswith("tritonserver exited with code") and str(tmp_path / "server.log") in message
    assert "failed to load 'banet_onnx' version 1" in message and "--flavour python" in message


def test_the_load_test_runs_against_the_server(server, onnx_file, expected):
    """serving.loadtest's client and checks work on the Triton ensemble as they do on serving.serve."""
    from serving.loadtest import load_test, table

    report = load_test(server.url, photos(), expected, requests=6, concurrency=3)
    assert report["requests"] == 6 and report["all_match"] and report["max_abs_diff_vs_direct"] <= 1
    assert report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert "| on | 3 | 6 |" in table([{"dynamic_batching": True, **report}])


def test_the_load_test_needs_an_onnx_file_for_triton(tmp_path, capsys):
    from serving.loadtest import main as loadtest

    pytest.importorskip("cv2", reason="the load test resizes photos with OpenCV")
    assert loadtest(["--target", "triton", "--model", str(tmp_path / "w.safetensors"), "--size", "8x8"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "export/to_onnx.py" in err


def test_a_python_without_onnxruntime_is_refused_before_starting(tmp_path, onnx_file, monkeypatch):
    """The bundled server runs the Python models with this interpreter: what they import is checked first."""
    _bundled_or_skip()
    import importlib.util

    from export.triton_repo import write_repository

    write_repository(onnx_file, tmp_path / "repo")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(TritonLaunchError, match=r"lacks onnxruntime \(for banet_ort\)") as caught:
        start(tmp_path / "repo", http_port=0, grpc_port=0)
    assert "\n" not in str(caught.value)


def test_the_command_line_serves_until_it_is_told_to_stop(tmp_path, onnx_file):
    """python -m serving.triton_server REPO: ready line, answers, SIGTERM -> clean stop (exit code 0)."""
    _bundled_or_skip()
    import signal
    import subprocess
    import sys

    from export.triton_repo import write_repository

    write_repository(onnx_file, tmp_path / "repo", threads=1)
    process = subprocess.Popen([sys.executable, "-m", "serving.triton_server", str(tmp_path / "repo"),
                                "--http-port", "0", "--grpc-port", "0", "--timeout", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines)
        assert "banet READY" in lines[-1] and "http://127.0.0.1:" in lines[-1]
        url = lines[-1].split("http://", 1)[1].split()[0]
        client = httpclient.InferenceServerClient(url)
        try:
            assert _http_infer(client, photos()[2][None]).as_numpy("deblurred").shape == (1, 64, 40, 3)
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "stopped (tritonserver exit code 0)" in rest
    # Triton's own log (its E... lines about CUDA on a CPU machine included) stays in the log file by default.
    assert "server log: " in lines[-1] and not re.search(r"^[IWE]\d{4} ", "".join(lines) + rest, re.MULTILINE)


def test_a_server_that_dies_is_reported_in_one_line_and_not_restarted(tmp_path, onnx_file):
    """--verbose shows the server's log; a tritonserver killed under the launcher: one line, exit code 1."""
    _bundled_or_skip()
    import signal
    import subprocess
    import sys

    from export.triton_repo import write_repository

    write_repository(onnx_file, tmp_path / "repo", threads=1)
    process = subprocess.Popen([sys.executable, "-m", "serving.triton_server", str(tmp_path / "repo"),
                                "--http-port", "0", "--timeout", "60", "--verbose", "--log", str(tmp_path / "t.log")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        ready = process.stdout.readline()
        assert ready.startswith("serving ") and f"server log: {tmp_path / 't.log'}" in ready, ready
        children = child_pids(process.pid)
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGKILL)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    assert re.search(r"^I\d{4} ", err, re.MULTILINE), "--verbose did not show the server's log"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: tritonserver was killed by signal 9 (SIGKILL); its log: {tmp_path / 't.log'}; "
                      "not restarted"], err[-2000:]
    assert not child_pids(process.pid) and (tmp_path / "t.log").stat().st_size > 0


def test_a_file_given_as_the_repository_is_named_as_one(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TritonLaunchError, match="afile is a file, not a folder"):  # before: "not found"
        start(tmp_path / "afile", http_port=0)
