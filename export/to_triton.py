"""Write a Triton Inference Server model repository for an exported BANet.

Examples:
    python export/to_triton.py                                   # engines/banet_default.onnx -> model_repository/
    python -m serving.triton_server model_repository             # serve it with the tritonserver PyTriton bundles

    python export/to_triton.py --flavour onnxruntime --gpu       # for NVIDIA's server containers
    python export/to_triton.py --engine engines/banet_default_fp16.engine   # tensorrt flavour (TensorRT engines)

Flavours of the network model (pre/post-processing are Python models in every flavour):
    python       ONNX Runtime in a Triton Python model: any server with the Python backend (the bundled one)
    onnxruntime  Triton's onnxruntime_onnx backend: NVIDIA's server containers
    tensorrt     Triton's tensorrt_plan backend: NVIDIA's containers with the engine's TensorRT version and GPU

Clients send UINT8 [1, H, W, 3] BGR images as "image" to the ensemble "banet" and get "deblurred" back.
The python flavour runs images over --memory-budget-mb (default 768 MiB, the runtime Deblurrer's) in overlapping
tiles, as the Deblurrer does; README_<name>.md says what memory a request can take.
Every model folder gets a to_triton.json listing what was written: --force replaces only such folders (of this
--name, with nothing added to them), and serving.triton_server reads the request limits from it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from banet.artifacts import onnx_path  # noqa: E402
from banet.cli_types import path_arg  # noqa: E402
from banet.shapes import MAX_BATCH  # noqa: E402
from banet.triton_marker import DEFAULT_MAX_PIXELS  # noqa: E402
from export.triton_repo import FLAVOURS, TritonRepoError, write_repository  # noqa: E402
from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export/to_triton.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=path_arg, default=onnx_path("banet_default"),
                        help="ONNX model exported by export/to_onnx.py (default: engines/banet_default.onnx)")
    parser.add_argument("--flavour", choices=list(FLAVOURS), default=None,
                        help="how the network runs (see above; default: tensorrt with --engine, else python)")
    parser.add_argument("--engine", type=path_arg, default=None,
                        help="TensorRT engine (+ manifest) for the tensorrt flavour (TensorRT for RTX is refused)")
    parser.add_argument("--repository", type=path_arg, default=Path("model_repository"), help="output folder")
    parser.add_argument("--name", default="banet",
                        help="ensemble name; models are <name>_ort / _onnx / _trt (flavour), _pre, _post")
    parser.add_argument("--max-batch", type=int, default=8,
                        help=f"max_batch_size for dynamic batching (1 to {MAX_BATCH}, the exports' limit; default 8)")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="largest image (H*W) the ensemble accepts, in millions of pixels (default %(default).0f)")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_MEMORY_BUDGET_MB,
                        help="working memory one forward pass of the python flavour's network may take, in MiB: "
                             "larger images run in overlapping tiles, as the runtime's Deblurrer runs them "
                             "(default %(default)g; 0: no budget, whole images: an untiled 12 MP photo needs ~14 GB)")
    parser.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="Triton's dynamic batcher on the network model (default: on)")
    parser.add_argument("--instances", type=int, default=1, help="model instances per device (1 to 64)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads per instance, python flavour (default 0: all cores)")
    parser.add_argument("--gpu", action="store_true", help="run the ONNX model on GPU instances (KIND_GPU)")
    parser.add_argument("--force", action="store_true",
                        help="replace this ensemble's models, if this tool wrote them (never other folders)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.max_megapixels * 1e6) and args.max_megapixels > 0):  # 1e308 MP overflows to inf
        print(f"error: --max-megapixels must be a positive number, got {args.max_megapixels}", file=sys.stderr)
        return 1
    if not args.onnx.exists():
        print(f"error: {args.onnx} not found; export it first: python export/to_onnx.py", file=sys.stderr)
        return 1
    try:
        written = write_repository(args.onnx, args.repository, args.name, args.max_batch, args.gpu, args.instances,
                                   args.engine, args.force, args.flavour, args.dynamic_batching, args.threads,
                                   round(args.max_megapixels * 1e6), args.memory_budget_mb)
    except (TritonRepoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} models to {args.repository}: " + ", ".join(p.parent.name for p in written))
    print(f"see {args.repository / ('README_' + args.name + '.md')} for the server it needs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
