"""One PyTriton server (tiny seeded network, default limits) shared by the serving tests, stopped as soon as they
are done: PyTriton's polling threads in the test process made the tests after them (training) twice as slow."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
#: Stop functions of the servers started here, called once the next test is not a serving test.
_STOPS: list = []


def pytest_runtest_teardown(item, nextitem) -> None:
    if _STOPS and (nextitem is None or HERE not in Path(nextitem.path).resolve().parents):
        while _STOPS:
            _STOPS.pop()()


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
    stopped = []

    def stop() -> None:
        if stopped:
            return
        stopped.append(True)
        server.stop()
        deblurrer.close()
        for p in (port, triton_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still listening after stop()"

    _STOPS.append(stop)
    yield Served(server.url, port, triton_port, deblurrer, weights)
    stop()
