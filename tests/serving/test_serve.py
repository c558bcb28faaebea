"""End to end: PyTriton serves the Deblurrer on loopback; several threads get checked answers; bad requests get
errors and the server keeps serving; it shuts down cleanly."""

import socket

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="PyTriton comes with the serve extra")

from runtime import Deblurrer  # noqa: E402
from runtime.client import DeblurClient  # noqa: E402
from runtime.loadtest import load_test  # noqa: E402
from runtime.serve import ServeConfig, start  # noqa: E402


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from banet.checkpoint import save_checkpoint
    from banet.config import BANetConfig
    from banet.model import BANet

    torch.manual_seed(0)
    weights = save_checkpoint(BANet(BANetConfig(2, 8, 16)), tmp_path_factory.mktemp("w") / "tiny.safetensors")
    http, grpc, metrics = _free_ports(3)
    deblurrer = Deblurrer(weights)
    triton = start(deblurrer, ServeConfig("127.0.0.1", http, grpc, metrics, max_batch=4))
    yield f"127.0.0.1:{http}", deblurrer
    triton.stop()
    deblurrer.close()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0, "server still listening after stop()"


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(32, 48), (32, 48), (40, 30), (16, 16)]]


def test_concurrent_requests_match_direct_output(server):
    url, deblurrer = server
    images = _images()
    expected = [deblurrer(img) for img in images]
    report = load_test(url, images, expected, requests=24, concurrency=4)
    assert report["all_match"], report
    assert report["requests"] == 24 and report["throughput_rps"] > 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((0, 8, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)])
def test_bad_requests_get_errors_and_server_keeps_serving(server, bad):
    from pytriton.client import ModelClient

    url, deblurrer = server
    with ModelClient(url, "banet", init_timeout_s=60) as client:
        with pytest.raises(Exception) as info:
            client.infer_sample(image=bad)
        assert "banet" in str(info.value) or "image" in str(info.value) or "small" in str(info.value)
    good = _images()[0]
    with DeblurClient(url) as client:
        np.testing.assert_array_equal(client(good), deblurrer(good))


def test_client_refuses_non_uint8(server):
    url, _ = server
    with DeblurClient(url) as client, pytest.raises(ValueError, match="uint8"):
        client(np.zeros((8, 8, 3), np.float32))
