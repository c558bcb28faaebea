"""Percent-encoded URL paths at the front: the front checked the *decoded* model name but forwarded the path as
sent, so ``/v2/models/b%61net/infer`` passed as 'banet' and reached Triton as ``b%61net`` (what is checked was not
what Triton reads). Now any ``%XX`` in the path is refused with a 400 naming the problem, before anything is
forwarded; plain paths still reach the model byte for byte. A stand-in model records what reaches it."""

from __future__ import annotations

import numpy as np
import pytest

from serving.front import start_front
from serving.request_rules import FrontLimits
from tests.serving.helpers import StubModel, assert_clean_refusal, binary_request, post


@pytest.fixture(scope="module")
def front_and_model():
    model = StubModel()
    front = start_front("127.0.0.1", 0, FrontLimits(), model.address)
    yield front, model
    front.stop()
    model.close()


ENCODED = [
    ("POST", "/v2/models/b%61net/infer"),  # decodes to the served name: used to pass, forwarded encoded
    ("POST", "/v2/models/%62%61%6E%65%74/infer"),
    ("POST", "/v2/models/%2e%2e/infer"),
    ("POST", "/v2/models/%2E%2E%2Fbanet/infer"),
    ("POST", "/v2/models/banet%2F..%2F..%2Fetc%2Fpasswd/infer"),
    ("POST", "/v2/models/banet%2fversions%2f1/infer"),
    ("POST", "/v2/models/%252e%252e/infer"),  # double-encoded
    ("POST", "/v2/models/banet%00/infer"),
    ("POST", "/v2/models/banet/versions/%31/infer"),
    ("GET", "/v2/models/b%61net/config"),
    ("GET", "/v2/models/%2e%2e%2f%2e%2e/ready"),
    ("GET", "/v2/models/b%61net"),
    ("GET", "/v2/health%2Fready"),
]


@pytest.mark.parametrize(("method", "path"), ENCODED)
def test_percent_encoded_paths_are_refused_before_the_model(front_and_model, method, path):
    front, model = front_and_model
    before = len(model.seen)
    body, headers = binary_request(np.random.default_rng(0).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8))
    status, answer, _ = post(front.port, body if method == "POST" else None, headers if method == "POST" else {},
                             path=path, method=method, timeout=10)
    message = assert_clean_refusal(status, answer, path)
    assert status == 400 and "percent-encoded" in message and "'banet'" in message, (status, message)
    assert len(model.seen) == before, f"{path} reached the model as {model.seen[before:]}"


def test_plain_paths_reach_the_model_as_sent(front_and_model):
    front, model = front_and_model
    body, headers = binary_request(np.random.default_rng(1).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8))
    for method, path in [("POST", "/v2/models/banet/infer"), ("POST", "/v2/models/banet/versions/1/infer"),
                         ("GET", "/v2/models/banet/ready"), ("GET", "/v2/health/ready")]:
        before = len(model.seen)
        status, answer, _ = post(front.port, body if method == "POST" else None,
                                 headers if method == "POST" else {}, path=path, method=method, timeout=10)
        assert status == 200, (path, answer)
        assert model.seen[before:] == [(method, path)]


def test_an_unknown_plain_model_name_is_still_404(front_and_model):
    front, model = front_and_model
    before = len(model.seen)
    status, answer, _ = post(front.port, b"{}", path="/v2/models/..banet/infer", timeout=10)
    assert status == 404 and "unknown model" in assert_clean_refusal(status, answer)
    assert len(model.seen) == before
