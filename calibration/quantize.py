"""Make the INT8 Q/DQ ONNX files of a model: ``ort`` for ONNX Runtime, ``ov`` for OpenVINO, ``trt`` for TensorRT.

    python -m calibration.quantize                     # default model -> engines/banet_default_int8_{ort,trt,ov}.onnx
    python -m calibration.quantize --onnx my.onnx --flavour ort --calib-dir my_blurred_photos/
    python -m calibration.quantize --auto-exclude 45        # keep the most harmful blocks in float until 45 dB
    python -m calibration.quantize --list-groups            # the blocks --exclude can name

Each file is verified against the FP32 ONNX and its held-out cost recorded (what Deblurrer(precision="int8")
checks) before it is written: per CPU engine, and on OpenVINO per int8 unit class (this CPU's, and each class
below it under a oneDNN instruction-set cap, one process each: docs/int8.md). The default files
(``<stem>_int8_<flavour>.onnx``) are what the drift report, the benchmarks and INT8 engine builds read. A run
with other settings (``--exclude`` other than the flavour's defaults, ``--auto-exclude``, ``--method`` other than
minmax, your own ``--calib-dir``) writes a variant with its own name, ``<stem>_int8_<flavour>_<variant>.onnx``, so
it never replaces a default file (``--output`` names it yourself).

This module is the command line; the quantizer is :mod:`calibration.int8`, the per-block search
:mod:`calibration.sensitivity`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

try:  # a thin install (no torch, onnx...): one line naming what to install, not a traceback
    from banet.artifacts import int8_onnx_path
    from banet.cli_types import path_arg
    from banet.outputs import check_output
    from calibration.cli_common import (
        DEFAULT_PERCENTILE,
        add_calibration_arguments,
        command_errors,
        decibels,
        ensure_fp32_onnx,
        error_line,
        help_text,
        parse_summary,
        percentile_arg,
        percentile_conflict,
        read_files,
        source_from_args,
    )
    from calibration.int8 import (
        DEFAULT_EXCLUDE,
        FLAVOURS,
        METHODS,
        QuantizeError,
        node_groups,
        quantizable_nodes,
        quantize_int8,
    )
    from calibration.sensitivity import search
    from runtime.images import quiet_opencv
    from runtime.stop_signals import stoppable, stopped_line
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "python -m calibration.quantize")
    raise

log = logging.getLogger(__name__)



def variant(flavour: str, method: str, percentile: float, exclude: Sequence[str], auto_exclude: float | None,
            calib_dir: Path | None = None) -> str:
    """The name suffix of a Q/DQ file made with other settings than the default file's ('' for the defaults)."""
    parts = []
    if calib_dir is not None:  # a long folder name as a digest: the file name must fit the file system's limit
        folder = re.sub(r"[^A-Za-z0-9_]+", "-", Path(calib_dir).resolve().name) or "dir"
        if len(folder) > 40:
            folder = hashlib.sha256(os.fsencode(Path(calib_dir).resolve().name)).hexdigest()[:10]
        parts.append("calib-" + folder)
    if method != "minmax":
        parts.append(method + (f"{percentile:g}" if method == "percentile" and percentile != DEFAULT_PERCENTILE
                               else ""))
    if auto_exclude is not None:
        parts.append(f"auto{auto_exclude:g}db")
    elif sorted(exclude) != sorted(DEFAULT_EXCLUDE[flavour]):
        names = "+".join(re.sub(r"[^A-Za-z0-9_]+", "-", name) for name in sorted(exclude)) or "none"
        if len(names) > 40:
            names = hashlib.sha256(",".join(sorted(exclude)).encode()).hexdigest()[:10]
        parts.append(f"float-{names}")
    return "_".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibration.quantize", description=help_text(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=path_arg, default=None,
                        help="FP32 ONNX to quantize (default: engines/<weights stem>.onnx, exported if missing)")
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint to export when the FP32 ONNX is missing (default: the embedded model)")
    parser.add_argument("--flavour", choices=(*FLAVOURS, "both", "all"), default="all",
                        help="ort: U8S8 for ONNX Runtime CPU; trt: S8S8 for TensorRT; ov: made by NNCF for "
                             "OpenVINO CPU; both: ort and trt; all (default): the three")
    parser.add_argument("--method", choices=METHODS, default="minmax", help="activation calibration (default minmax)")
    parser.add_argument("--percentile", type=percentile_arg, default=DEFAULT_PERCENTILE,
                        help=f"percentile for --method percentile, in (0, 100] (default {DEFAULT_PERCENTILE})")
    parser.add_argument("--exclude", nargs="*", default=None, metavar="GROUP",
                        help="blocks to keep in float, e.g. de_layer3 BAM_4/BA.mask (default: the flavour's "
                             "measured defaults; pass --exclude with no names to quantize everything)")
    parser.add_argument("--auto-exclude", type=decibels, default=None, metavar="DB",
                        help="run the sensitivity search and keep the most harmful blocks in float until the "
                             "drift vs FP32 is >= DB dB")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="output file (only with one flavour; default engines/<stem>_int8_<flavour>.onnx, "
                             "or <stem>_int8_<flavour>_<variant>.onnx with other settings than the defaults)")
    parser.add_argument("--force", action="store_true",
                        help="replace INT8 files that already exist (--output, or the default engines/ files); "
                             "without it an existing file stops the command before any work")
    parser.add_argument("--list-groups", action="store_true", help="print the model's quantizable blocks and exit")
    add_calibration_arguments(parser)
    return parser


def option_conflict(args: argparse.Namespace) -> str | None:
    """Options one of which would be silently ignored (exit 2, as argparse's refusals), or None."""
    if args.exclude is not None and args.auto_exclude is not None:
        return ("--exclude and --auto-exclude both choose the blocks kept in float (the search would replace your "
                "list): pass one of them")
    if args.flavour in FLAVOURS and FLAVOURS[args.flavour].quantizer == "nncf" and args.method != "minmax":
        return f"--flavour {args.flavour} is calibrated with NNCF's own ranges: --method {args.method} does not apply"
    return percentile_conflict(args)


@stoppable
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_opencv()
    flavours = {"both": ["ort", "trt"], "all": list(FLAVOURS)}.get(args.flavour, [args.flavour])
    if args.flavour == "all" and args.method != "minmax":
        flavours.remove("ov")
        print(f"note: ov (NNCF's own ranges) takes no --method; quantizing ort and trt with {args.method}")
    if args.output and len(flavours) > 1:
        print("error: --output needs a single --flavour", file=sys.stderr)
        return 2
    conflict = option_conflict(args)
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    try:
        source = source_from_args(args)
        # even with --force, never over a file it reads (the FP32 reference, the checkpoint)
        inputs = read_files(args.onnx, args.weights, "the FP32 ONNX being quantized")
        if args.output and not args.list_groups:  # --list-groups writes nothing: its --output is not checked
            if args.output.suffix.lower() != ".onnx":
                raise QuantizeError(f"{args.output}: ONNX files end in .onnx (the runtime picks the backend from the "
                                    "extension)")
            check_output(args.output, force=args.force, error=QuantizeError, suffix=".onnx", inputs=inputs,
                         option="--output")
        fp32 = ensure_fp32_onnx(args.onnx, args.weights)
        if args.list_groups:
            import onnx

            model = onnx.load(str(fp32), load_external_data=False)
            for flavour in flavours:
                print(f"{flavour}:")
                for name, nodes in node_groups(quantizable_nodes(model, FLAVOURS[flavour])).items():
                    always = "  (always in float in this flavour)" if name in FLAVOURS[flavour].float_groups else ""
                    print(f"  {name:22s} {len(nodes):3d} nodes{always}")
            return 0
        outputs = {}
        for flavour in flavours:  # every file refused before the first (long) search and calibration starts
            exclude = list(DEFAULT_EXCLUDE[flavour]) if args.exclude is None else args.exclude
            output = args.output or int8_onnx_path(fp32, flavour, variant(flavour, args.method, args.percentile,
                                                                          exclude, args.auto_exclude, args.calib_dir))
            check_output(output, force=args.force, error=QuantizeError, suffix=".onnx", inputs=inputs,
                         option="--output" if args.output else "")
            outputs[flavour] = output, exclude
        for flavour, (output, exclude) in outputs.items():
            extra = {}
            if args.auto_exclude is not None:
                report = search(fp32, source, flavour, args.method, args.auto_exclude, percentile=args.percentile,
                                rank_when_met=False)
                print(report.table())
                exclude = report.excluded
                extra["int8_sensitivity"] = json.dumps(report.summary())
            result = quantize_int8(fp32, output, source, flavour, args.method, exclude, args.percentile, args.force,
                                   extra_metadata=extra, log_level=logging.DEBUG)  # "wrote" is printed below, once
            drift = ", ".join(f"{k}: {v:.1f}" for k, v in result.verification.items())
            method = "nncf" if FLAVOURS[flavour].quantizer == "nncf" else args.method
            print(f"wrote {result.path} ({flavour}, {method}, {len(result.quantized_nodes)} nodes quantized, "
                  f"float blocks: {', '.join(result.excluded_groups) or 'none'}); drift vs FP32 ONNX: {drift} dB "
                  f"({result.seconds:.0f} s){parse_summary(result.tensorrt_parse)}")
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable); first: command_errors() imports
        return stopped_line(exc, "the file in progress was not written")  # torch, which a stop may have cut short
    except command_errors() as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
