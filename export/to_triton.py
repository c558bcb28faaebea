"""Write a Triton Inference Server model repository for an exported BANet.

Examples:
    python export/to_triton.py                                   # engines/banet_default.onnx -> model_repository/
    python export/to_triton.py --onnx engines/BANet_GoPro.onnx --gpu --max-batch 4
    python export/to_triton.py --engine engines/banet_default_fp16.engine   # also a tensorrt_plan model

Then: tritonserver --model-repository model_repository   (clients send UINT8 HxWx3 BGR images to "banet").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from banet.artifacts import onnx_path  # noqa: E402
from export.triton_repo import TritonRepoError, write_repository  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export/to_triton.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=onnx_path("banet_default"),
                        help="ONNX model exported by export/to_onnx.py (default: engines/banet_default.onnx)")
    parser.add_argument("--engine", type=Path, default=None, help="TensorRT engine (+ manifest) to add as a plan")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="output folder")
    parser.add_argument("--name", default="banet", help="ensemble name; models are <name>_onnx, _trt, _pre, _post")
    parser.add_argument("--max-batch", type=int, default=8, help="max_batch_size for dynamic batching")
    parser.add_argument("--instances", type=int, default=1, help="model instances per device")
    parser.add_argument("--gpu", action="store_true", help="run the ONNX model on GPU instances (KIND_GPU)")
    parser.add_argument("--force", action="store_true", help="replace models of the same names")
    args = parser.parse_args(argv)
    if not args.onnx.exists():
        print(f"error: {args.onnx} not found; export it first: python export/to_onnx.py", file=sys.stderr)
        return 1
    try:
        written = write_repository(args.onnx, args.repository, args.name, args.max_batch, args.gpu, args.instances,
                                   args.engine, args.force)
    except (TritonRepoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} models to {args.repository}: " + ", ".join(p.parent.name for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
