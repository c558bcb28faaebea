"""End to end: PyTriton serves the Deblurrer behind the validating front on loopback; several threads get checked
answers; bad requests get one-line 4xx errors and the server keeps serving; it shuts down cleanly (conftest)."""

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="PyTriton comes with the serve extra")

from serving.client import DeblurClient  # noqa: E402
from serving.loadtest import load_test  # noqa: E402
from tests.serving.helpers import post  # noqa: E402


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(32, 48), (32, 48), (40, 30), (16, 16)]]


def test_concurrent_requests_match_direct_output(served):
    images = _images()
    expected = [served.deblurrer(img) for img in images]
    report = load_test(served.url, images, expected, requests=24, concurrency=4)
    assert report["all_match"], report
    assert report["requests"] == 24 and report["throughput_rps"] > 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((0, 8, 3), np.uint8), np.zeros((1, 1, 3), np.uint8),
                                 np.zeros((1, 9, 3), np.uint8)])
def test_bad_requests_get_errors_and_server_keeps_serving(served, bad):
    from pytriton.client import ModelClient

    with ModelClient(served.url, "banet", init_timeout_s=10) as client:
        with pytest.raises(Exception) as info:
            client.infer_sample(image=bad)
    message = str(info.value)
    assert "image" in message and "Traceback" not in message and ".py" not in message
    good = _images()[0]
    with DeblurClient(served.url) as client:
        np.testing.assert_array_equal(client(good), served.deblurrer(good))


def test_client_refuses_non_uint8(served):
    with DeblurClient(served.url) as client, pytest.raises(ValueError, match="uint8"):
        client(np.zeros((8, 8, 3), np.float32))


def test_metadata_is_forwarded_without_paths(served):
    status, body, _ = post(served.port, b"", method="GET", path="/v2/models/banet/config")
    assert status == 200 and b'"max_batch_size": 4' in body
    assert b"workspace" not in body and b"/root" not in body and b"/tmp" not in body
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/banet/ready", "/v2/models/banet"):
        assert post(served.port, b"", method="GET", path=path)[0] == 200, path
