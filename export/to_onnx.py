"""Export BANet to ONNX with dynamic (or static) shapes, and verify it against PyTorch before writing it.

Examples:
    python export/to_onnx.py                                   # embedded default model -> engines/
    python export/to_onnx.py --weights BANet_GoPro.pth         # the authors' checkpoint (any layout)
    python export/to_onnx.py --fp16                            # FP16 weights/compute, FP32 input/output
    python export/to_onnx.py --static 720x1280 --batch 1       # -> engines/banet_default_720x1280_b1.onnx
    python export/to_onnx.py --simplify                        # -> engines/banet_default_slim.onnx
    python export/to_onnx.py --verify-sizes 1x1080x1920 2x36x52  # add shapes to the parity sweep
    python export/to_onnx.py --check-openvino                  # also verified on OpenVINO (static and dynamic)

Every export is checked with the ONNX checker and shape inference, then run with ONNX Runtime against
PyTorch on a sweep of shapes (square, wide, tall, 8x8, 2x2, 6x40, non-multiples of 7, batch > 1, 720x1280). The file
is only written when every shape passes (FP32: PSNR >= 80 dB and max abs error <= 1e-4); otherwise the
command exits non-zero and leaves the graph as <name>.failed.onnx for inspection.

Files go under the engines folder ($BANET_ENGINES, else this checkout's engines/, else ./engines); a static or
simplified export has its own name there, so it never replaces the default ONNX the other commands read.
Memory: a static export traces and verifies at its full size; --static 720x1280 of the default model peaked at
6.2 GB resident (measured: 64 s on 2 cores), so leave that much memory free for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:  # outside the project's venv (no numpy, torch...): one line saying so, not a traceback from our imports
    from banet.artifacts import engines_rule, onnx_path
    from banet.checkpoint import CheckpointError, load_checkpoint
    from banet.cli_types import path_arg
    from banet.defaults import default_weights_path
    from banet.outputs import check_not_input, check_output, write_atomic, write_error
    from banet.shapes import MAX_BATCH, parse_batch, parse_hw, parse_nhw, sweep_problem
    from export.onnx_export import ExportError, ExportOptions, export_onnx
    from export.parity import DEFAULT_SWEEP
    from runtime.stop_signals import stoppable, stopped_line
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "export/to_onnx.py")
    raise

log = logging.getLogger("export.to_onnx")


def default_output(weights_stem: str, options: ExportOptions) -> Path:
    """:func:`banet.artifacts.onnx_path`: a static, fixed-batch, simplified or otherwise different export gets its
    own name, never the default one."""
    sizes = (options.min_size, options.max_size)
    return onnx_path(weights_stem, options.precision, options.static_hw, options.batch, simplified=options.simplify,
                     sizes=None if sizes == (ExportOptions.min_size, ExportOptions.max_size) else sizes,
                     exporter=options.exporter, folded=options.fold_attention)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export/to_onnx.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint to export: .pth (bare, module.-prefixed or model_state) or .safetensors; "
                             "default: the embedded default model")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="ONNX file to write (default: engines/<weights name>[_HxW_bN][_fp16].onnx; any other "
                             "non-default option adds its own part: _bN, _8-64px, _dynamo, _unfolded, _slim)")
    parser.add_argument("--force", action="store_true", help="overwrite the output file (and --report) if it exists")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (13..21, default 17)")
    parser.add_argument("--fp16", action="store_true",
                        help="float16 weights and compute with float32 input/output (residual add kept in fp32)")
    parser.add_argument("--static", type=parse_hw, default=None, metavar="HxW",
                        help="fixed input height x width (both even) instead of dynamic height/width; traced and "
                             "verified at that size (720x1280: ~6.2 GB peak memory)")
    parser.add_argument("--batch", type=parse_batch, default=None, metavar="N",
                        help=f"fixed batch size, 1 to {MAX_BATCH} (default: dynamic batch; 1 with --static)")
    parser.add_argument("--min-size", type=int, default=None,
                        help=f"smallest height/width the dynamic model is declared and verified for (default "
                             f"{DEFAULT_MIN_SIZE})")
    parser.add_argument("--max-size", type=int, default=4096,
                        help="largest height/width the dynamic model is declared and verified for (default 4096)")
    parser.add_argument("--simplify", action="store_true",
                        help="simplify the graph with onnxslim (re-verified); default output <name>_slim.onnx")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx exporter: torchscript (fast, default) or dynamo (torch.export based)")
    parser.add_argument("--verify-sizes", type=parse_nhw, nargs="+", default=[], metavar="[N]xHxW",
                        help="extra shapes for the parity sweep, e.g. 1x1080x1920 2x36x52")
    parser.add_argument("--no-default-sweep", action="store_true",
                        help="verify only on --verify-sizes (at least one required), not the built-in sweep")
    parser.add_argument("--min-psnr", type=float, default=None,
                        help="pass threshold in dB vs PyTorch FP32 (default 80 for fp32, 45 for fp16)")
    parser.add_argument("--max-abs-error", type=float, default=None,
                        help="pass threshold on the raw output (default 1e-4 for fp32, none for fp16)")
    parser.add_argument("--check-openvino", action="store_true",
                        help="also verify the file on OpenVINO's CPU plugin (what Deblurrer() runs where it is "
                             "installed), compiled per shape and for dynamic shapes, against the same thresholds")
    parser.add_argument("--report", type=path_arg, default=None,
                        help="also write the parity report as JSON here (an existing file only with --force)")
    parser.add_argument("--trained-attention", action="store_true",
                        help="keep the blur-aware attention as trained in the graph; by default it is folded (the "
                             "same function with one convolution fewer per BAM and no full-resolution concatenation: "
                             "8-14%% faster on CPUs, banet.folding)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress logs: only errors, the parity table and the final line")
    return parser


#: The smallest side a dynamic export is declared for unless --min-size says otherwise.
DEFAULT_MIN_SIZE = 2


def command_line_conflict(args: argparse.Namespace) -> str | None:
    """Options that contradict each other (exit 2, as argparse does), or None."""
    if args.no_default_sweep and not args.verify_sizes:
        return "--no-default-sweep needs at least one --verify-sizes shape"
    if args.static is not None and (args.verify_sizes or args.no_default_sweep):
        return ("--static exports are verified at their own shape only; --verify-sizes / --no-default-sweep "
                "would be ignored, drop them")
    if args.static is not None and args.min_size is not None:
        return "--min-size bounds a dynamic export's sizes; a --static export takes its one size: drop --min-size"
    low = DEFAULT_MIN_SIZE if args.min_size is None else args.min_size
    for n, h, w in args.verify_sizes:
        if sweep_problem([(n, h, w)]):  # empty or too large for any check: refused with its own reason (exit 1)
            continue
        if min(h, w) < low or max(h, w) > args.max_size:
            return (f"--verify-sizes {n}x{h}x{w} lies outside the sizes the export is declared for ({low}..."
                    f"{args.max_size}, --min-size/--max-size), so it would not be verified: widen the bounds or drop "
                    "it")
    return None


def check_paths(weights: Path, output: Path, report: Path | None, force: bool) -> None:
    """Refuse, before any work, an output that is not an ONNX file name or is the checkpoint, and a report that
    would overwrite the checkpoint, the ONNX itself (even with ``--force``), or an existing file without ``--force``
    (ExportError, one line; :func:`banet.outputs.check_not_input`)."""
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"{output}: ONNX files end in .onnx (the runtime picks the backend from the extension)")
    check_not_input(output, {"the checkpoint (--weights)": weights}, error=ExportError, option="--output")
    if report is None:
        return
    check_output(report, force=force, error=ExportError, suffix=".json", option="--report",
                 inputs={"the checkpoint (--weights)": weights, "the ONNX file (--output)": output})


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The export the command line asks for."""
    sweep = ([] if args.no_default_sweep else list(DEFAULT_SWEEP)) + list(args.verify_sizes)
    return ExportOptions(opset=args.opset, precision="fp16" if args.fp16 else "fp32", static_hw=args.static,
                         batch=args.batch, min_size=DEFAULT_MIN_SIZE if args.min_size is None else args.min_size,
                         max_size=args.max_size,
                         simplify=args.simplify, exporter=args.exporter, verify_shapes=sweep,
                         min_psnr_db=args.min_psnr, max_abs_error=args.max_abs_error, force=args.force,
                         check_openvino=args.check_openvino, fold_attention=not args.trained_attention)


@stoppable
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    conflict = command_line_conflict(args)
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    options = options_from_args(args)
    weights = Path(args.weights or default_weights_path())
    output = args.output or default_output(weights.stem, options)
    try:
        check_paths(weights, output, args.report, args.force)
        loaded = load_checkpoint(weights)
        log.info("weights: %s (%s, layout %s%s)", weights, loaded.config.describe(), loaded.layout,
                 ", configuration inferred from shapes" if loaded.config_inferred else "")
        if args.output is None:
            log.info("%s", engines_rule())
        path, report = export_onnx(loaded.model, output, options, loaded.sha256, weights.name, loaded.config)
    except (CheckpointError, FileNotFoundError) as exc:  # a bad --weights: one line (torch's detail dropped)
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except ExportError as exc:  # with -q the parity table of a failed verification follows the line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the system refuses (a name too long...): one line, not a traceback
        print(f"error: {exc.filename or output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable)
        return stopped_line(exc, f"nothing written to {output}")
    if args.quiet:
        print(report.table())
    if args.report:
        try:
            write_atomic(args.report, json.dumps(report.to_dict(), indent=2).encode())
        except OSError as exc:
            print(f"error: {write_error(exc, args.report)} (the ONNX was written: {path})", file=sys.stderr)
            return 1
    size_mb = path.stat().st_size / 1e6
    shape = ("static " + "x".join(map(str, (options.batch, *options.static_hw))) if options.static_hw
             else f"batch {options.batch}, dynamic H,W" if options.batch is not None else "dynamic N,H,W")
    print(f"wrote {path} ({size_mb:.1f} MB, {options.precision}, {shape}); "
          f"verified on {len(report.results)} shapes, worst PSNR {report.worst_psnr_db:.1f} dB"
          + "".join(f"; {other.candidate}: worst {other.worst_psnr_db:.1f} dB" for other in report.others))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
