"""The front's checks and the infer function's error lines, without starting a server."""

import numpy as np
import pytest

from serving.front import _ByteBudget
from serving.request_rules import (
    FrontLimits,
    RequestError,
    check_infer_request,
    clean_upstream_error,
    error_tag,
    one_line,
    scrub_config,
)
from tests.serving.helpers import binary_request


def test_a_real_4000x3000_binary_request_passes_the_default_limits():
    body, headers = binary_request(np.zeros((1, 3000, 4000, 3), np.uint8))
    limits = FrontLimits()
    assert len(body) <= limits.body_limit
    assert check_infer_request(body, int(headers["Inference-Header-Content-Length"]), limits) == 3000 * 4000
    with pytest.raises(RequestError) as info:
        check_infer_request(body, int(headers["Inference-Header-Content-Length"]), FrontLimits(max_pixels=10**6))
    assert info.value.status == 413


def test_upstream_errors_become_one_line():
    traceback = ('{"error":"Failed to process ... Traceback (most recent call last):\\n  File \\"/tmp/x/1/model.py\\", '
                 'line 492\\n PyTritonBadParameterError: ' + error_tag(400, "image of 1x1 pixels\nis too small")
                 + '\\n"}').encode()
    assert clean_upstream_error(500, traceback) == (400, "image of 1x1 pixels is too small")
    untagged = b'{"error":"Traceback (most recent call last):\\n  File \\"/work/main/runtime/x.py\\", line 1"}'
    assert clean_upstream_error(500, untagged) == (500, "internal error while running the model (see the server log)")
    assert clean_upstream_error(400, b'{"error":"model version 2 not found"}') == (400, "model version 2 not found")
    assert one_line("no file /root/.cache/x/y.py here\n") == "no file <path> here"


def test_client_keeps_the_tagged_reason_of_a_grpc_traceback():
    from serving.client import error_line

    text = 'Traceback (most recent call last):\n  File "/x/serve.py"\nError: ' + error_tag(400, "too small") + "\nAt:"
    assert error_line(text) == "too small"
    assert error_line('Traceback:\n File "/x.py"') == "internal error while running the model (see the server log)"
    assert error_line("/data/a.png: image file\nnot found") == "/data/a.png: image file not found"


def test_config_loses_path_parameters():
    body = b'{"name":"banet","parameters":{"workspace-path":{"string_value":"/root/.cache/pytriton/w"},"k":{"v":1}}}'
    assert scrub_config(body) == b'{"name": "banet", "parameters": {"k": {"v": 1}}}'


def test_byte_budget_refuses_when_full():
    budget = _ByteBudget(100)
    with budget.hold(80, wait_s=0.01):
        with pytest.raises(RequestError) as info, budget.hold(30, wait_s=0.05):
            pass
        assert info.value.status == 503
    with budget.hold(100, wait_s=0.01):
        pass


def test_infer_failures_are_tagged_and_batches_split_by_pixels():
    from banet.processing import ImageFormatError, NonFiniteOutputError
    from serving.serve import check_images, describe_failure, pixel_chunks

    assert describe_failure(ImageFormatError("too small")) == "<<banet-error 400: too small>>"
    assert describe_failure(NonFiniteOutputError("NaN")) == "<<banet-error 500: NaN>>"
    assert "internal error" in describe_failure(RuntimeError("/secret/path/x.py exploded"))
    batch = np.zeros((5, 10, 10, 3), np.uint8)
    assert [len(c) for c in pixel_chunks(batch, 250)] == [2, 2, 1]
    assert [len(c) for c in pixel_chunks(batch, 50)] == [1] * 5
    with pytest.raises(ImageFormatError, match="limit"):
        check_images(batch, 99)
    with pytest.raises(ImageFormatError, match="too small"):
        check_images(np.zeros((1, 1, 5, 3), np.uint8), 99)
