"""PyTorch backend: any checkpoint the model package loads, on CPU or CUDA, optionally half / channels_last, or in
bfloat16 on a CPU with bfloat16 units (``inference_precision="bf16"``: autocast, what ``Deblurrer(precision="bf16")``
asks of a checkpoint).

On CUDA each input shape runs as a CUDA graph by default (:mod:`banet.cuda_graphs`: eager PyTorch is
launch-bound there at batch 1), with cuDNN's benchmark mode on while the backend runs; ``cuda_graph=False``
runs eager.

The checkpoint runs in its deployed form by default, as exports do: the blur-aware attention folded
(:mod:`banet.folding`, the same function within 2e-7, one convolution and the full-resolution concatenation fewer
per BAM); on a CPU in channels_last too: 1.29x faster than the checkpoint as trained (default network, 720x1280,
AMD EPYC, 2 threads, ``python -m benchmarks.run``: ``benchmarks/results/torch-cpu_AMD-EPYC_2026-12-06.md``).
``fold_attention=False`` runs the module tree as trained (the reference the export and drift checks compare with).

It lives with the model (it needs torch and the network definition) and plugs into the runtime through the
entry point group ``banet_deploy.checkpoint_backends`` (see ``pyproject.toml``), so the runtime itself never
imports torch: ``Deblurrer("model.safetensors")`` finds it when the model layer is installed."""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from banet.checkpoint import load_checkpoint
from banet.config import BANetConfig
from banet.conventions import BANET
from banet.cuda_graphs import DEFAULT_GRAPH_CACHE, GraphRunner, cudnn_benchmark
from banet.errors import OptionError
from banet.folding import fold_attention as folded
from banet.folding import is_folded
from banet.metadata import ModelMetadata
from banet.model import BANet
from runtime.backends.base import (
    Backend,
    BackendUnavailableError,
    ShapeLimits,
    check_bool,
    check_inference_precision,
    check_tristate,
)

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """Runs a BANet checkpoint in PyTorch. Conventions are the model package's own (``banet.conventions``)."""

    name = "torch"

    def __init__(self, weights: str | Path, device: str | None = None, half: bool = False,
                 channels_last: bool | None = None, threads: int | None = None, cuda_graph: bool | None = None,
                 graph_cache: int = DEFAULT_GRAPH_CACHE, fold_attention: bool = True,
                 inference_precision: str = "f32") -> None:
        """Load ``weights`` on ``device`` (default: CUDA where PyTorch sees a GPU, else the CPU).

        Args:
            half: FP16 weights and activations (GPUs only).
            channels_last: NHWC memory format (None: on a CPU, where oneDNN's convolutions measured faster in it;
                off on CUDA, where scripts/gpu_checks.sh measures it per GPU).
            threads: PyTorch's intra-op CPU threads for this backend's calls (set for each call and put back after
                it: PyTorch's count is per process, and an app's other PyTorch work keeps its own).
            cuda_graph: capture each input shape in a CUDA graph and replay it (None: on for CUDA devices; True
                on a CPU is refused in one line; False: eager).
            graph_cache: input shapes kept captured (least recently used dropped). They share one memory pool:
                together they hold about the largest shape's working memory plus each shape's output.
            fold_attention: run the attention folded (:func:`banet.folding.fold_attention`, the same function
                with fewer operations); False runs the module tree as trained.
            inference_precision: "f32" (default) or "bf16": the FP32 weights run under bfloat16 autocast (oneDNN's
                bfloat16 convolutions; the model's own float32 ops, such as reductions, stay float32) on a CPU with
                bfloat16 units; refused on CUDA (``half=True`` there) and on CPUs without them (emulated, slower).
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_device_precision(device, inference_precision)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but PyTorch sees no CUDA GPU "
                                          f"(torch {torch.__version__}); use device='cpu'")
        if half and not device.startswith("cuda"):
            raise OptionError("half precision is for GPUs: float16 convolutions on a CPU are extremely slow and "
                              "not what a deployment runs; use half=False on CPU")
        graphs = check_graph_options(device, cuda_graph, graph_cache)
        channels_last = check_tristate("channels_last", channels_last)
        channels_last = not device.startswith("cuda") if channels_last is None else channels_last
        check_bool("fold_attention", fold_attention)
        loaded = load_checkpoint(weights, device=device)
        model = loaded.model
        if fold_attention and isinstance(model, BANet):
            model = folded(model)  # before half: the folded weights are computed in float64
        self._setup(model, torch.device(device), half, channels_last, loaded.config, loaded.sha256,
                    Path(weights).name, graphs, graph_cache, threads, inference_precision)

    @classmethod
    def from_model(cls, model: torch.nn.Module, device: str = "cpu", source_name: str = "in-memory model",
                   cuda_graph: bool = False) -> TorchBackend:
        """A backend around a network already in memory (export verification, drift): the same ``run`` as for a
        checkpoint file. The model is used as it is (no copy, no dtype change); eager unless ``cuda_graph``."""
        backend = cls.__new__(cls)
        config = getattr(model, "config", None) or BANetConfig()
        graphs = check_graph_options(str(device), cuda_graph, DEFAULT_GRAPH_CACHE)
        backend._setup(model, torch.device(device), False, False, config, "", source_name, graphs,
                       DEFAULT_GRAPH_CACHE)
        return backend

    def _setup(self, model, device, half: bool, channels_last: bool, config: BANetConfig, sha256: str,
               source_name: str, cuda_graph: bool = False, graph_cache: int = DEFAULT_GRAPH_CACHE,
               threads: int | None = None, inference_precision: str = "f32") -> None:
        self.model = model
        #: The arithmetic of the convolutions: "f32", or "bf16" (bfloat16 autocast on a CPU).
        self.inference_precision = inference_precision
        #: PyTorch's intra-op threads during this backend's calls (None: the process's own count)
        self.threads = int(threads) if threads else None
        self.device = device
        self.half = half
        self.channels_last = channels_last
        if half:
            self.model.half()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        dtype = torch.float16 if half else torch.float32
        #: runs every batch: through CUDA graphs per shape when ``cuda_graph``, else eager (the same function)
        self.runner = GraphRunner(self._forward, device, dtype, memory_format, size=int(graph_cache),
                                  enabled=cuda_graph)
        metadata = ModelMetadata(
            conventions=BANET, config=config, precision="fp16" if half else "fp32", source_sha256=sha256,
            source_name=source_name, exporter=f"none (PyTorch {torch.__version__} eager)", opset=0,
            attention="folded" if isinstance(model, BANet) and is_folded(model) else "trained")
        Backend.__init__(self, metadata, ShapeLimits())

    @property
    def cuda_graph(self) -> bool:
        """Whether input shapes run as CUDA graphs."""
        return self.runner.enabled

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW on the device -> float32 NCHW contiguous: the precision and layout changes included, so
        a CUDA graph captures them too."""
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.inference_precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model(x).float().contiguous()
        return self.model(x).float().contiguous()

    def device_memory_bytes(self) -> int | None:
        """The CUDA device's total memory; None on a CPU."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.get_device_properties(self.device).total_memory)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.device.type != "cuda":
            with intra_op_threads(self.threads):
                return self.runner(batch)
        with cudnn_benchmark():
            return self.runner(batch)

    def release_memory(self) -> None:
        """Free the captured graphs and their memory pool (each shape captures again on its next call)."""
        if getattr(self, "runner", None) is not None:
            self.runner.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def close(self) -> None:
        if getattr(self, "model", None) is not None:
            self.runner.clear()
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def describe(self) -> str:
        flags = ["fp32 weights, bf16 autocast" if self.inference_precision == "bf16" else self.metadata.precision]
        flags += ["channels_last"] if self.channels_last else []
        flags.append(f"{self.metadata.attention} attention")
        if self.cuda_graph:
            flags.append(f"CUDA graphs, cache {self.runner.size}")
        return f"torch on {self.device} ({', '.join(flags)})"


def check_graph_options(device: str, cuda_graph: bool | None, graph_cache: int) -> bool:
    """Whether CUDA graphs are on for ``device``; a request that cannot be met is one :class:`OptionError` line."""
    if isinstance(graph_cache, bool | np.bool_) or not isinstance(graph_cache, numbers.Integral) or graph_cache < 1:
        raise OptionError(f"graph_cache must be a whole number of input shapes >= 1, got {graph_cache!r}")
    cuda_graph = check_tristate("cuda_graph", cuda_graph)
    on_cuda = device.startswith("cuda")
    if cuda_graph and not on_cuda:
        raise OptionError(f"cuda_graph=True needs a CUDA device, got device={device!r}; CUDA graphs replay GPU "
                          "kernels (leave cuda_graph unset or False on a CPU)")
    return on_cuda if cuda_graph is None else cuda_graph


def cpu_bf16_units() -> list[str]:
    """The bfloat16 units of this CPU as PyTorch sees them ("AMX", "AVX512_BF16") that oneDNN may use under an
    instruction-set cap (:func:`banet.machine.isa_cap`); empty where it has none (or where this PyTorch cannot say):
    there oneDNN would emulate bfloat16, slower than float32."""
    from banet.machine import cap_allows, isa_cap

    probes = {"AMX": ("_is_amx_tile_supported", "amx_bf16"),
              "AVX512_BF16": ("_is_avx512_bf16_supported", "avx512_bf16")}
    units = []
    for unit, (probe, flag) in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check() and cap_allows(flag, isa_cap()):
            units.append(unit)
    return units


def check_device_precision(device: str, inference_precision: str) -> None:
    """Refuse, in one line, an ``inference_precision`` this backend cannot run natively on ``device`` (bfloat16:
    autocast on a CPU with bfloat16 units)."""
    if check_inference_precision(inference_precision) == "f32":
        return
    if device.startswith("cuda"):
        raise OptionError("inference_precision='bf16' is bfloat16 on a CPU with bfloat16 units; on a GPU use "
                          "half=True (or device='cpu')")
    if not cpu_bf16_units():
        raise BackendUnavailableError(
            "this CPU has no bfloat16 units (PyTorch sees neither AMX nor AVX512_BF16: Intel Xeon 4th generation "
            "or later, AMD Zen 4 or later); bfloat16 would be emulated, slower than float32: run fp32 or int8")


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block and put back after it (None: unchanged).

    Setting it once for good (as this backend did until 2026-12-05) changed every later PyTorch computation of the
    process: an app's own models, or training run after a ``Deblurrer(threads=1)``, ran on one core."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
