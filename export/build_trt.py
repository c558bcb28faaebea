"""Build a TensorRT engine (FP32, FP16 or INT8) from the exported ONNX, with a manifest that keeps it honest.

Examples:
    python export/build_trt.py --fp16 --dry-run          # check everything and print the plan + trtexec line
    python export/build_trt.py                           # FP32 baseline -> engines/banet_default_fp32.engine
    python export/build_trt.py --fp16                    # no GPU here: -> engines/banet_default_fp16_sm75.engine
    python export/build_trt.py --int8                    # from the Q/DQ ONNX (python -m calibration.quantize)
    python export/build_trt.py --int8 --calibrate        # TensorRT 10 only: entropy calibration + cache
    python export/build_trt.py --fp16 --runtime tensorrt-rtx --target sm75   # RTX 2080 Ti, no GPU needed
    python export/build_trt.py --min 1x256x256 --opt 1x720x1280 --max 2x1080x1920 --timing-cache engines/tc.bin

Which TensorRT:
    tensorrt      NVIDIA TensorRT 10/11 (datacenter and desktop GPUs). Builds on the GPU the engine is for.
                  On 10.x FP16 uses BuilderFlag.FP16 on the FP32 ONNX (weakly typed); on 11+ (no weak typing)
                  and with --strongly-typed, precision comes from the FP16 / Q/DQ ONNX itself.
    tensorrt-rtx  NVIDIA TensorRT for RTX (pip install tensorrt-rtx): RTX GPUs only (Turing sm75 .. Blackwell
                  sm120), builds ahead of time on any machine, no GPU needed. No --target: this machine's
                  GPU if it is an RTX one; else FP16 builds for the RTX 2080 Ti (sm75, the project's GPU) and
                  FP32 for Ampere+ RTX (Turing has no FP32 GEMMs). Every build prints the GPUs its engine runs
                  on. No INT8.
    auto          whichever is installed, TensorRT first (default); for --int8 TensorRT only.

Files go under the engines folder: $BANET_ENGINES, else this checkout's engines/ (whatever the current folder),
else ./engines for an installed package; the build says which.

Output: the engine and, next to it, <name>.json: TensorRT flavour and version, GPU / targets, precision,
profile, the ONNX's sha256 and metadata, build options and time, and the drift against ONNX Runtime FP32
measured right after the build (on a GPU). The runtime refuses an engine whose manifest does not match the
installed TensorRT or the GPU, naming what differs and the command that rebuilds it.

Missing ONNX (FP32/FP16) at the default path is exported first with export/to_onnx.py; an --onnx, --weights
or --check path must exist. Exit status: 0 built (or planned with --dry-run), 1 refused or failed (one line
saying why), 2 bad or contradicting command line, 130 interrupted (Ctrl-C: nothing is replaced). A dry run also
parses the ONNX with the TensorRT-family parser installed here (tensorrt or tensorrt_rtx) and fails on what it
refuses.

Rebuilding with --force replaces the engine and its manifest together: the new pair is written under staged
names and swapped in, so a build killed at any point, a full disk or a failed drift check leaves the old pair
working (banet/manifest.py says how); the next build clears what a killed one left.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:  # outside the project's venv (no numpy, torch...): one line saying so, not a traceback from our imports
    from banet.artifacts import engines_rule
    from banet.checkpoint import CheckpointError
    from banet.cli_types import path_arg
    from banet.manifest import ManifestError
    from export.onnx_export import ExportError
    from export.trt_build import (
        DEFAULT_MAX,
        DEFAULT_MIN,
        DEFAULT_OPT,
        BuildError,
        BuildOptions,
        PlanError,
        RuntimeMissingError,
        build,
        check_engine,
        detect_runtime,
        ensure_runnable,
        make_plan,
        parse_shape,
        parse_targets,
        parser_check,
        shape_text,
        summary,
    )
    from runtime.stop_signals import stoppable, stopped_line
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "export/build_trt.py")
    raise

log = logging.getLogger("export.build_trt")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export/build_trt.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 engine (default: FP32, the baseline)")
    precision.add_argument("--int8", action="store_true",
                           help="INT8 engine from the Q/DQ ONNX engines/<name>_int8_trt.onnx (TensorRT only)")
    parser.add_argument("--runtime", choices=("auto", "tensorrt", "tensorrt-rtx"), default="auto",
                        help="TensorRT flavour (default auto: TensorRT if installed, else TensorRT for RTX)")
    parser.add_argument("--target", default=None, metavar="SM[,SM...]",
                        help="TensorRT for RTX compute capabilities, e.g. sm75 (RTX 2080 Ti) or sm75,sm86,sm89,sm120 "
                             "(default: this machine's RTX GPU; else sm75 for --fp16, Ampere+ RTX for FP32)")
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint the ONNX is (or will be) exported from; names the engine "
                             "(default: the embedded default model)")
    parser.add_argument("--onnx", type=path_arg, default=None,
                        help="ONNX to build from (default: engines/<name>.onnx, <name>_fp16.onnx for strongly typed "
                             "FP16, <name>_int8_trt.onnx for INT8); it must exist. With --check: the FP32 ONNX to "
                             "compare with (default: the engine's FP32 ONNX, as its manifest records)")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="engine file (default: engines/<name>_<precision>[_<targets>].engine); the manifest is "
                             "written next to it as .json")
    parser.add_argument("--force", action="store_true", help="overwrite an existing engine")
    parser.add_argument("--min", type=_shape, default=DEFAULT_MIN, metavar="NxHxW",
                        help=f"smallest input of the optimisation profile (default {shape_text(DEFAULT_MIN)})")
    parser.add_argument("--opt", type=_shape, default=DEFAULT_OPT, metavar="NxHxW",
                        help=f"shape TensorRT tunes for (default {shape_text(DEFAULT_OPT)})")
    parser.add_argument("--max", type=_shape, default=DEFAULT_MAX, metavar="NxHxW",
                        help=f"largest input (default {shape_text(DEFAULT_MAX)}); larger images are tiled by "
                             "the runtime")
    parser.add_argument("--workspace", type=int, default=None, metavar="MiB",
                        help="builder workspace limit in MiB (default: TensorRT's, the GPU's memory)")
    parser.add_argument("--optimization-level", type=int, default=3, metavar="0-5",
                        help="builder optimisation level: higher searches longer for faster kernels (default 3)")
    parser.add_argument("--timing-cache", type=path_arg, default=None, metavar="FILE",
                        help="read and update this TensorRT timing cache (faster rebuilds; ignored by RTX)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="TensorRT: engine also runs on later TensorRT releases (10 -> 11), somewhat slower")
    parser.add_argument("--hardware-compatible", choices=("none", "ampere_plus", "same_compute_capability"),
                        default="none", help="TensorRT: engine runs on other GPUs (all Ampere+, or the same compute "
                                             "capability) instead of only the build GPU's model")
    parser.add_argument("--strongly-typed", action="store_true",
                        help="TensorRT 10: strongly typed network, precision from the FP16 / Q/DQ ONNX (always so "
                             "on TensorRT 11+ and TensorRT for RTX)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 math in FP32 engines (default: off, exact)")
    parser.add_argument("--calibrate", action="store_true",
                        help="TensorRT 10, with --int8: implicit INT8 calibration of the FP32 ONNX (entropy "
                             "calibrator) instead of the Q/DQ ONNX")
    parser.add_argument("--calibration-cache", type=path_arg, default=None, metavar="FILE",
                        help="calibration cache read/written by --calibrate (default: <engine>.calib)")
    parser.add_argument("--calibration-shape", type=_shape, default=(1, 256, 256), metavar="NxHxW",
                        help="shape of the calibration batches (default 1x256x256)")
    parser.add_argument("--min-psnr", type=float, default=None,
                        help="drift threshold in dB vs ONNX Runtime FP32 (default 70 fp32, 40 fp16, 25 int8)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every check that needs neither TensorRT nor a GPU, print the plan and the "
                             "equivalent trtexec / tensorrt_rtx command, build nothing")
    parser.add_argument("--check", type=path_arg, default=None, metavar="ENGINE",
                        help="load an engine built elsewhere (e.g. ahead of time) on this GPU, measure its drift "
                             "and record it in its manifest; nothing is built. Fails (exit 1, manifest untouched) "
                             "when it cannot measure: no GPU, no FP32 ONNX to compare with")
    parser.add_argument("--no-progress", action="store_true", help="do not print build phases")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors and the final line")
    return parser


def check(engine: Path, reference: Path | None) -> int:
    """``--check``: measure and record an engine's drift here; exit 1 (one line, manifest untouched) if it cannot,
    and exit 1 (measurement recorded) if the drift misses the threshold."""
    try:
        manifest = check_engine(engine, reference)
    except (ManifestError, PlanError, RuntimeMissingError, BuildError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    drift = manifest.drift
    verdict = "passed" if drift.get("passed") else "FAILED"
    print(f"{engine}: drift vs ONNX Runtime FP32 {drift['worst_psnr_db']:.1f} dB on this GPU ({verdict}; recorded "
          "in its manifest)")
    return 0 if drift.get("passed") else 1  # a failed comparison fails the command, as Polygraphy's do


#: Options that only shape a build; ``--check`` measures an existing engine and would silently ignore them.
BUILD_ONLY = ("fp16", "int8", "target", "weights", "output", "force", "min", "opt", "max", "workspace",
              "optimization_level", "timing_cache", "version_compatible", "hardware_compatible", "strongly_typed",
              "tf32", "calibrate", "calibration_cache", "calibration_shape", "dry_run", "runtime", "min_psnr")


def check_conflicts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """Build options given with ``--check`` (which builds nothing, and records a measurement even beside
    ``--dry-run``): the line that refuses them, or None."""
    if args.check is None:
        return None
    given = [f"--{name.replace('_', '-')}" for name in BUILD_ONLY if getattr(args, name) != parser.get_default(name)]
    if given:
        return (f"--check measures an existing engine (and records the drift in its manifest); it builds nothing, "
                f"so {', '.join(given)} would be ignored: drop {'them' if len(given) > 1 else 'it'}")
    return None


@stoppable
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    conflict = check_conflicts(args, parser)
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    try:
        return _main(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable)
        return stopped_line(exc, "no engine or manifest was changed")


def _main(args: argparse.Namespace) -> int:
    if args.check is not None:
        return check(args.check, args.onnx)
    try:
        targets = parse_targets(args.target)
        precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
        runtime = detect_runtime(args.runtime, precision)
        options = BuildOptions(
            precision=precision, onnx=args.onnx,
            weights=args.weights, output=args.output, force=args.force, targets=targets, min_shape=args.min,
            opt_shape=args.opt, max_shape=args.max, workspace_mib=args.workspace,
            optimization_level=args.optimization_level, timing_cache=args.timing_cache,
            version_compatible=args.version_compatible, hardware_compatibility=args.hardware_compatible,
            strongly_typed=args.strongly_typed, tf32=args.tf32, calibrate=args.calibrate,
            calibration_cache=args.calibration_cache, calibration_shape=args.calibration_shape,
            min_psnr_db=args.min_psnr, progress=not (args.no_progress or args.quiet))
        plan = make_plan(options, runtime, allow_missing_input=args.dry_run)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the system refuses (a name too long...): one line, not a traceback
        print(f"error: {exc.filename or args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(plan.describe())
        print(engines_rule())
        if plan.missing:
            print(f"a real build would stop with: {plan.missing}")
            return 0
        try:
            print(parser_check(plan))
        except PlanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            ensure_runnable(plan)
            print("ready to build here (drop --dry-run)")
        except RuntimeMissingError as exc:
            print(f"a real build here would stop with: {exc}")
        return 0
    log.info(engines_rule())
    for note in plan.notes:
        log.info("note: %s", note)
    try:
        path, manifest = build(plan)
    except (PlanError, RuntimeMissingError, BuildError, ExportError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(manifest, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
