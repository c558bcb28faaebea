"""Calibration fixtures: a tiny FP32 ONNX export (once per session) and a private calibration cache."""

import os
from pathlib import Path

import pytest
import torch

from banet.config import BANetConfig
from banet.model import BANet

TINY = BANetConfig(num_bams=2, dim_1=8, dim_2=16)


@pytest.fixture(scope="session")
def calibration_cache(tmp_path_factory) -> Path:
    """Every test of this folder caches calibration data in a session-private folder, never the user's."""
    path = tmp_path_factory.mktemp("banet-cache")
    old = os.environ.get("BANET_CACHE")
    os.environ["BANET_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BANET_CACHE", None)
    else:
        os.environ["BANET_CACHE"] = old


@pytest.fixture(autouse=True)
def _private_cache(calibration_cache):
    yield


@pytest.fixture(scope="session")
def tiny_net() -> BANet:
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)  # as tests/conftest.py: make the residual branch matter
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_net) -> Path:
    """tiny_net saved once: the file whose sha256 tiny_onnx records (safetensors headers are written in a
    different key order on each save, so another save of the same network has another sha256)."""
    from banet.checkpoint import save_checkpoint

    return save_checkpoint(tiny_net, tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_net, tiny_checkpoint) -> Path:
    from banet.checkpoint import file_sha256
    from export.onnx_export import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_net, path, ExportOptions(verify_shapes=[(1, 32, 32)]), file_sha256(tiny_checkpoint),
                "tiny.safetensors", TINY)
    return path
