"""``python -m calibration.quantize``: make the INT8 Q/DQ ONNX files (``ort`` and ``trt`` flavours) of a model.

The quantizer itself is :mod:`calibration.int8`; the per-block sensitivity search (``--auto-exclude``) is
:mod:`calibration.sensitivity`. This module is the command line: arguments, finding (or exporting) the FP32
ONNX, one error line per failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from banet.outputs import check_output
from calibration.cli_common import (
    add_calibration_arguments,
    command_errors,
    ensure_fp32_onnx,
    error_line,
    parse_summary,
    source_from_args,
)
from calibration.int8 import (
    DEFAULT_EXCLUDE,
    FLAVOURS,
    METHODS,
    QuantizeError,
    default_int8_path,
    node_groups,
    quantizable_nodes,
    quantize_int8,
)
from calibration.sensitivity import search

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibration.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=None,
                        help="FP32 ONNX to quantize (default: engines/<weights stem>.onnx, exported if missing)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint to export when the FP32 ONNX is missing (default: the embedded model)")
    parser.add_argument("--flavour", choices=("ort", "trt", "both"), default="both",
                        help="ort: U8S8 for ONNX Runtime CPU; trt: S8S8 for TensorRT; both (default)")
    parser.add_argument("--method", choices=METHODS, default="minmax", help="activation calibration (default minmax)")
    parser.add_argument("--percentile", type=float, default=99.999, help="percentile for --method percentile")
    parser.add_argument("--exclude", nargs="*", default=None, metavar="GROUP",
                        help="blocks to keep in float, e.g. de_layer3 BAM_4/BA.mask (default: the flavour's "
                             "measured defaults; pass --exclude with no names to quantize everything)")
    parser.add_argument("--auto-exclude", type=float, default=None, metavar="DB",
                        help="run the sensitivity search and keep the most harmful blocks in float until the "
                             "drift vs FP32 is >= DB dB")
    parser.add_argument("--output", type=Path, default=None,
                        help="output file (only with one flavour; default engines/<stem>_int8_<flavour>.onnx)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--list-groups", action="store_true", help="print the model's quantizable blocks and exit")
    add_calibration_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flavours = ["ort", "trt"] if args.flavour == "both" else [args.flavour]
    if args.output and len(flavours) > 1:
        print("error: --output needs a single --flavour", file=sys.stderr)
        return 2
    try:
        source = source_from_args(args)
        if args.output:
            check_output(args.output, force=args.force, error=QuantizeError, suffix=".onnx")
        fp32 = ensure_fp32_onnx(args.onnx, args.weights)
        if args.list_groups:
            import onnx

            model = onnx.load(str(fp32), load_external_data=False)
            for flavour in flavours:
                print(f"{flavour}:")
                for name, nodes in node_groups(quantizable_nodes(model, FLAVOURS[flavour])).items():
                    print(f"  {name:22s} {len(nodes):3d} nodes")
            return 0
        for flavour in flavours:
            output = args.output or default_int8_path(fp32, flavour)
            exclude = list(DEFAULT_EXCLUDE[flavour]) if args.exclude is None else args.exclude
            extra = {}
            if args.auto_exclude is not None:
                report = search(fp32, source, flavour, args.method, args.auto_exclude, percentile=args.percentile)
                print(report.table())
                exclude = report.excluded
                extra["int8_sensitivity"] = json.dumps(report.summary())
            result = quantize_int8(fp32, output, source, flavour, args.method, exclude, args.percentile, args.force,
                                   extra_metadata=extra)
            drift = ", ".join(f"{k}: {v:.1f}" for k, v in result.verification.items())
            print(f"wrote {result.path} ({flavour}, {args.method}, {len(result.quantized_nodes)} nodes quantized, "
                  f"float blocks: {', '.join(result.excluded_groups) or 'none'}); drift vs FP32 ONNX: {drift} dB "
                  f"({result.seconds:.0f} s){parse_summary(result.tensorrt_parse)}")
    except command_errors() as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
