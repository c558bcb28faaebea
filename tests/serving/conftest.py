"""One PyTriton server (tiny seeded network, default limits) shared by the serving tests."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest


@dataclass
class Served:
    url: str  # host:port of the public (validating) port
    port: int
    triton_port: int  # Triton's private loopback port
    deblurrer: object
    weights: object


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    pytest.importorskip("pytriton", reason="PyTriton comes with the serve extra")
    import torch

    from banet.checkpoint import save_checkpoint
    from banet.config import BANetConfig
    from banet.model import BANet
    from runtime import Deblurrer
    from serving.serve import ServeConfig, start

    torch.manual_seed(0)
    weights = save_checkpoint(BANet(BANetConfig(2, 8, 16)), tmp_path_factory.mktemp("w") / "tiny.safetensors")
    deblurrer = Deblurrer(weights)
    server = start(deblurrer, ServeConfig("127.0.0.1", 0, metrics_port=None, max_batch=4))
    port, triton_port = server.front.port, server.front.upstream[1]
    yield Served(server.url, port, triton_port, deblurrer, weights)
    server.stop()
    deblurrer.close()
    for p in (port, triton_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still listening after stop()"
