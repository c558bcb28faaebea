"""FP16 drift without a GPU: an honest emulation of float16 storage with float32 accumulation.

ONNX Runtime's CPU provider runs a float16 ONNX graph largely by casting to float32 internally, so its
output says little about a GPU running the same graph in half precision. What a GPU with tensor cores (and
TensorRT's FP16 kernels) does is: weights and activations *stored* in float16, products accumulated in float32.
:func:`emulated_fp16_forward` reproduces exactly that in PyTorch on the CPU: weights are rounded to float16,
and every activation tensor an operation produces is rounded to float16, while the arithmetic inside each
operation stays float32. Overflow (|x| > 65504) becomes Inf, as it would on the GPU.

What it does not model: kernels that accumulate in float16 (faster, less accurate; TensorRT may pick them
only when allowed), and fusions that skip an intermediate rounding (which only reduce error). Treat the
result as the drift of a careful FP16 deployment; measure on a GPU to confirm (``benchmarks``/README).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from banet.model import BANet


def _round_half(value):
    if isinstance(value, Tensor) and value.dtype == torch.float32 and value.dim() >= 3:
        return value.to(torch.float16).to(torch.float32)
    if isinstance(value, (tuple, list)):
        return type(value)(_round_half(v) for v in value)
    return value


class Float16StorageMode(TorchFunctionMode):
    """Round every float32 activation (rank >= 3) an operation returns to float16 precision.

    Rank-2 tensors (the strip-pooling index and averaging matrices) are left alone: in the exported FP16
    graph their index arithmetic is float32 by construction.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return _round_half(func(*args, **(kwargs or {})))


class _EmulatedHalfBANet(nn.Module):
    """The FP16 export's structure (``export.onnx_export.HalfPrecisionBANet``) under float16 storage."""

    def __init__(self, model: BANet, fp32_residual: bool) -> None:
        super().__init__()
        self.net = model
        self.fp32_residual = fp32_residual

    def forward(self, x: Tensor) -> Tensor:
        with Float16StorageMode():
            body_in = x.to(torch.float16).to(torch.float32)
            residual = self.net.residual(body_in)
            if not self.fp32_residual:
                return residual + body_in
        return residual + x


def emulated_fp16_model(model: BANet, fp32_residual: bool = True) -> nn.Module:
    """A copy of ``model`` whose forward emulates the FP16 ONNX export on a GPU (see module docstring)."""
    clone = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for param in clone.parameters():
            param.copy_(param.to(torch.float16).to(torch.float32))
    return _EmulatedHalfBANet(clone, fp32_residual).eval()


def emulated_fp16_forward(model: BANet, fp32_residual: bool = True):
    """NCHW float32 numpy -> NCHW float32 numpy forward under FP16 storage emulation."""
    emulated = emulated_fp16_model(model, fp32_residual)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return emulated(torch.from_numpy(x)).numpy()

    return run
