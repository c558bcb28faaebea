"""Shared fixtures: small seeded networks and checkpoints written in the layouts users hold."""

from pathlib import Path

import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.model import BANet

TINY = BANetConfig(num_bams=2, dim_1=8, dim_2=16)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_model() -> BANet:
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    # Random init leaves the residual branch tiny; scale the last layer so errors are not hidden by it.
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)
    return model


@pytest.fixture
def tiny_weights(tmp_path: Path, tiny_model: BANet) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
