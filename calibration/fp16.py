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

from banet.cli_types import path_arg
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
    graph their index arithmetic is integer by construction.
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


def measure(model: BANet, shapes=((1, 256, 256), (2, 98, 130), (1, 720, 1280)), onnx: bool = True) -> dict:
    """FP16 drift vs FP32 PyTorch, in dB: emulated GPU FP16 (residual add in fp32 and in fp16), and the FP16 ONNX
    export on ONNX Runtime CPU (which largely upcasts to fp32, so it understates GPU drift)."""
    import tempfile
    from pathlib import Path

    from export.onnx_export import ExportOptions, export_onnx, torch_forward
    from export.parity import compare
    from export.runtime_forwards import onnxruntime_forward

    reference = torch_forward(model)
    results = {
        "emulated fp16 (fp32 residual add, as exported)": compare(reference, emulated_fp16_forward(model), shapes,
                                                                  0.0, None),
        "emulated fp16 (fp16 residual add)": compare(reference, emulated_fp16_forward(model, False), shapes, 0.0,
                                                     None),
    }
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            path, _ = export_onnx(model, Path(tmp) / "fp16.onnx",
                                  ExportOptions(precision="fp16", verify_shapes=[(1, 64, 64)]), "-", "-", model.config)
            results["FP16 ONNX on ONNX Runtime CPU"] = compare(reference, onnxruntime_forward(path), shapes, 0.0, None)
    return {name: {"worst_psnr_db": round(r.worst_psnr_db, 2),
                   "per_shape": {"x".join(map(str, s.shape)): round(s.psnr_db, 2) for s in r.results},
                   "max_abs_error": max(s.max_abs_error for s in r.results)} for name, r in results.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m calibration.fp16``: FP16 drift of the default (or given) and the full network."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from banet.checkpoint import CheckpointError, load_checkpoint
    from banet.config import FULL
    from banet.defaults import DEFAULT_WEIGHTS, default_weights_path
    from banet.outputs import check_output, write_atomic, write_error
    from calibration.cli_common import error_line
    from export.onnx_export import ExportError

    parser = argparse.ArgumentParser(prog="python -m calibration.fp16", description=main.__doc__)
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint (default: the embedded default model)")
    parser.add_argument("--full", action="store_true",
                        help="also the full stack-10 network (random weights, seed 0: the authors' are not here)")
    parser.add_argument("--json", type=path_arg, default=None,
                        help="write the results as JSON here (an existing file only with --force)")
    parser.add_argument("--force", action="store_true", help="replace the --json file if it already exists")
    args = parser.parse_args(argv)
    try:
        if args.json:  # refused before the measurements, not after them
            weights = "the checkpoint (--weights)" if args.weights else "the embedded default checkpoint"
            check_output(args.json, force=args.force, error=ExportError, suffix=".json", option="--json",
                         inputs={weights: Path(args.weights) if args.weights else DEFAULT_WEIGHTS})
        loaded = load_checkpoint(args.weights or default_weights_path())
        report = {f"{loaded.path.name} ({loaded.config.describe()})": measure(loaded.model)}
        if args.full:
            torch.manual_seed(0)
            report[f"random weights ({FULL.describe()})"] = measure(BANet(FULL).eval(), shapes=((1, 256, 256),
                                                                                                (2, 64, 96)))
    except (CheckpointError, ExportError, FileNotFoundError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    for model_name, rows in report.items():
        print(model_name)
        for name, row in rows.items():
            shapes = ", ".join(f"{k}: {v:.1f}" for k, v in row["per_shape"].items())
            print(f"  {name:48s} worst {row['worst_psnr_db']:6.1f} dB   ({shapes})")
    if args.json:
        try:  # whole or not at all: a full disk leaves the previous file as it was
            write_atomic(args.json, json.dumps(report, indent=2).encode())
        except OSError as exc:
            print(f"error: {write_error(exc, args.json)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
