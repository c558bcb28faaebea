"""PyTorch backend: any checkpoint the model package loads, on CPU or CUDA, optionally half / channels_last.

It lives with the model (it needs torch and the network definition) and plugs into the runtime through the
entry point group ``banet_deploy.checkpoint_backends`` (see ``pyproject.toml``), so the runtime itself never
imports torch: ``Deblurrer("model.safetensors")`` finds it when the model layer is installed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from banet.checkpoint import load_checkpoint
from banet.config import BANetConfig
from banet.conventions import BANET
from banet.metadata import ModelMetadata
from runtime.backends.base import Backend, BackendUnavailableError, ShapeLimits

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """Runs a BANet checkpoint in PyTorch. Conventions are the model package's own (``banet.conventions``)."""

    name = "torch"

    def __init__(self, weights: str | Path, device: str | None = None, half: bool = False,
                 channels_last: bool = False, threads: int | None = None) -> None:
        if threads:  # PyTorch's intra-op threads are per process: the CLI's --threads means this process's CPU use
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but PyTorch sees no CUDA GPU "
                                          f"(torch {torch.__version__}); use device='cpu'")
        if half and not device.startswith("cuda"):
            raise ValueError("half precision is for GPUs: float16 convolutions on a CPU are extremely slow and "
                             "not what a deployment runs; use half=False on CPU")
        loaded = load_checkpoint(weights, device=device)
        self._setup(loaded.model, torch.device(device), half, channels_last, loaded.config, loaded.sha256,
                    Path(weights).name)

    @classmethod
    def from_model(cls, model: torch.nn.Module, device: str = "cpu", source_name: str = "in-memory model"
                   ) -> TorchBackend:
        """A backend around a network already in memory (export verification, drift): the same ``run`` as for a
        checkpoint file. The model is used as it is (no copy, no dtype change)."""
        backend = cls.__new__(cls)
        config = getattr(model, "config", None) or BANetConfig()
        backend._setup(model, torch.device(device), False, False, config, "", source_name)
        return backend

    def _setup(self, model, device, half: bool, channels_last: bool, config: BANetConfig, sha256: str,
               source_name: str) -> None:
        self.model = model
        self.device = device
        self.half = half
        self.channels_last = channels_last
        if half:
            self.model.half()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        metadata = ModelMetadata(
            conventions=BANET, config=config, precision="fp16" if half else "fp32", source_sha256=sha256,
            source_name=source_name, exporter=f"none (PyTorch {torch.__version__} eager)", opset=0)
        Backend.__init__(self, metadata, ShapeLimits())

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.model(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        if getattr(self, "model", None) is not None:
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def describe(self) -> str:
        flags = [self.metadata.precision] + (["channels_last"] if self.channels_last else [])
        return f"torch on {self.device} ({', '.join(flags)})"
