"""Model cost (parameters, FLOPs, operations per forward pass) and the latency floor a GPU's peak throughput allows.

FLOPs are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no
memory, no compute): 2 x multiply-adds of every convolution and matrix product, which is what bounds BANet
(elementwise work is excluded and small). Checked by hand against the notes: 7.19 TFLOP per 1280x720 frame for
the stack-10 network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from banet.config import BANetConfig
from banet.model import BANet, count_parameters


@dataclass(frozen=True)
class GpuPeak:
    """Vendor peak throughputs (dense), in TFLOP/s or TOPS. Lower bounds derived from these are estimates."""

    name: str
    fp32: float
    fp16_fp32acc: float
    fp16_fp16acc: float
    int8: float
    bandwidth_gbs: float


#: Peak numbers from NVIDIA's published specifications (dense, boost clock).
GPUS = {
    "RTX 2080 Ti": GpuPeak("RTX 2080 Ti", 13.4, 53.8, 107.6, 215.2, 616),
    "H100 SXM": GpuPeak("H100 SXM", 67.0, 989.0, 989.0, 1979.0, 3350),
    "H200": GpuPeak("H200", 67.0, 989.0, 989.0, 1979.0, 4800),
}


def flops(config: BANetConfig, height: int, width: int, batch: int = 1) -> int:
    """FLOPs (2 x MACs of convs and matmuls) of one forward pass at ``batch`` x ``height`` x ``width``."""
    model = BANet(config).to("meta").eval()
    x = torch.zeros(batch, 3, height, width, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def operations(config: BANetConfig, height: int, width: int, batch: int = 1) -> int:
    """Operations PyTorch dispatches in one eager forward pass (the second at this size, as a runtime repeats it),
    counted on the meta device: on a GPU each is a kernel launch, what bounds eager PyTorch at batch 1."""
    model = BANet(config).to("meta").eval()
    x = torch.zeros(batch, 3, height, width, device="meta")
    with torch.no_grad():
        model(x)
        with _Dispatched() as counter:
            model(x)
    return counter.count


class _Dispatched(TorchDispatchMode):
    """Counts the ATen operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def parameters(config: BANetConfig) -> int:
    return count_parameters(BANet(config).to("meta"))


def lower_bound_ms(total_flops: float, peak_tflops: float) -> float:
    """Latency at 100% of peak throughput: an estimate of the floor, never a measurement."""
    return total_flops / (peak_tflops * 1e12) * 1e3
