"""Make an app graph: the network with the project's pre- and post-processing inside, uint8 images in and out, for
apps that link only ONNX Runtime (Android and iOS through ORT Mobile, browsers through onnxruntime-web, C#, Java,
C++), checked against the runtime's pixels and PyTorch before it is written.

Examples:
    python export/to_app.py                        # engines/banet_default.onnx -> banet_default_app.onnx + .ort
    python export/to_app.py --precision int8       # the INT8 file for CPUs (python -m calibration.quantize makes it)
    python export/to_app.py --channel-order BGR    # BGR/BGRA input and output (iOS pixel buffers, OpenCV)
    python export/to_app.py --weights BANet_GoPro.pth --precision fp16

The graph takes "image", uint8 [N, H, W, 3] (or 4 channels: the alpha is ignored, so an Android Bitmap's or a
canvas's RGBA bytes go in as they are) and gives "deblurred", uint8 [N, H, W, 3], the same size, and "finite",
bool [N], false where the network overflowed (that image is garbage). An image larger than --tile runs in evenly
sized overlapping tiles inside the graph, blended as the runtime blends them, holding float sums for one strip
of tiles at a time: a 12 MP photo needs a tile's worth of network and a strip, not the photo in float32.

Next to the .onnx it writes the ORT format file ORT Mobile loads (.ort, optimized for no particular CPU) and the
operator list a reduced ORT Mobile build needs (.required_operators.config); --no-ort leaves them out. Both files
are run on the export sweep's shapes plus odd ones (5x3, 37x53, batch 2 of 99x131) and a 2x2 grid of tiles,
and must give the runtime path's pixels (>= 99.9% equal, none more than one level apart) within the precision's
PSNR floor of PyTorch FP32 (fp32 70, fp16 40, int8 25 dB); a file that fails is left as <name>.failed.onnx /
.ort and the command exits 1.
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
    from banet.artifacts import app_path, engines_rule, int8_onnx_path, onnx_path
    from banet.cli_types import path_arg
    from banet.defaults import DEFAULT_ONNX, default_weights_path
    from banet.errors import ArtifactError, CheckpointError
    from banet.metadata import read_onnx_metadata, stale_source
    from banet.outputs import check_input, check_output, write_atomic, write_error
    from banet.shapes import parse_nhw, sweep_problem
    from export.app_check import APP_SWEEP, AppReport
    from export.app_graph import CHANNEL_ORDERS
    from export.onnx_export import ExportError
    from runtime.stop_signals import stoppable, stopped_line
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "export/to_app.py")
    raise

log = logging.getLogger("export.to_app")

#: The network file each precision wraps (INT8: the Q/DQ file made for CPUs, which phones' CPUs run).
PRECISIONS = ("fp32", "fp16", "int8")
#: Largest tile side by default (a 12 MP photo: 30 tiles of 626x694); smaller tiles hold less memory, take longer.
DEFAULT_TILE = 768
CONFIG_SUFFIX = ".required_operators.config"
#: The onnxruntime-web checks: (the option's attribute, in a browser, the option, the engine as reports name it).
WEB_CHECKS = (("check_web", False, "--check-web", "onnxruntime-web"),
              ("check_browser", True, "--check-browser", "Chromium, onnxruntime-web"))


class CheckFailed(ExportError):
    """A check refused the graph: nothing written; the reports are kept for ``--report``."""

    def __init__(self, message: str, network: Path, reports: list[AppReport]) -> None:
        super().__init__(message)
        self.network, self.reports = network, reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export/to_app.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="the checkpoint the network ONNX was exported from (PyTorch reference; default: the "
                             "embedded default model)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="which network file to wrap: fp32 or fp16 (exported first when missing) or int8 (the "
                             "CPU Q/DQ file of python -m calibration.quantize); default fp32")
    parser.add_argument("--onnx", type=path_arg, default=None,
                        help="wrap this network ONNX instead (an export of this project, of --weights)")
    parser.add_argument("--channel-order", type=str.upper, choices=CHANNEL_ORDERS, default="RGB",
                        help="channel order of the app's images, in and out (default RGB; RGBA/BGRA take the same)")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="app graph to write (default: engines/<network name>_app[_bgr].onnx); the .ort and its "
                             "operator list go next to it")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PX",
                        help=f"run images larger than PX x PX in evenly sized overlapping tiles of at most that, "
                             f"blended as the runtime blends them, so memory stays bounded on any photo (default "
                             f"{DEFAULT_TILE}; the network's working memory grows with the tile, ~1.3 KB a pixel for "
                             "the default network); 0 runs every image whole")
    parser.add_argument("--overlap", type=int, default=None, metavar="PX",
                        help="tile overlap in pixels (default 32; with --tile > 0 only)")
    parser.add_argument("--check-web", action="store_true",
                        help="also run both files on onnxruntime-web (WebAssembly, what browsers run; under Node.js, "
                             "from apps/web) on small shapes and a 2x2 grid of tiles, held to the same drift floor")
    parser.add_argument("--check-browser", action="store_true",
                        help="also run both files in a real browser: headless Chromium (apt install chromium) opens "
                             "apps/web's page, whose own code runs them on onnxruntime-web; the same shapes as "
                             "--check-web, held to the same drift floor")
    parser.add_argument("--check-openvino", action="store_true",
                        help="also run the .onnx on OpenVINO's CPU plugin (what an app built on OpenVINO runs) on "
                             "the same shapes, held to the same drift floor")
    parser.add_argument("--no-ort", action="store_true", help="write only the .onnx, not the ORT Mobile files")
    parser.add_argument("--force", action="store_true", help="overwrite the outputs (and --report) if they exist")
    parser.add_argument("--verify-sizes", type=parse_nhw, nargs="+", default=[], metavar="[N]xHxW",
                        help="extra shapes to check, e.g. 1x1080x1920 2x36x52")
    parser.add_argument("--report", type=path_arg, default=None,
                        help="also write the check's results as JSON here (an existing file only with --force)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress logs: only errors, the check table and the final line")
    return parser


def network_file(args: argparse.Namespace, weights: Path) -> Path:
    """The network ONNX to wrap: ``--onnx``, else the weights' export of ``--precision`` (exported and verified
    first when missing; the INT8 file must have been made by calibration.quantize)."""
    from export.artifact_chain import exported_onnx

    if args.onnx is not None:
        return check_input(args.onnx, error=ExportError, what="network ONNX (--onnx)")
    if args.precision == "int8":
        path = int8_onnx_path(onnx_path(weights.stem), "ort")
        shipped = int8_onnx_path(DEFAULT_ONNX, "ort")
        if not path.is_file() and args.weights is None and shipped.is_file():  # the default model's own, as
            log.info("wrapping the default model's shipped INT8 file %s", shipped)  # Deblurrer runs it
            return shipped
        return check_input(path, error=ExportError, what="INT8 file",
                           fix="make it with python -m calibration.quantize" + (
                               f" --weights {weights}" if args.weights else ""))
    return exported_onnx(weights, args.precision)


def sweep(tile: int | None, overlap: int) -> tuple[tuple[int, int, int], ...]:
    """The shapes both files are checked on: :data:`export.app_check.APP_SWEEP`, and with tiles an image just over
    a tile on each side (a 2x2 grid: a second row of tiles takes over the rows the first one shared)."""
    if tile is None:
        return tuple(APP_SWEEP)
    return (*APP_SWEEP, (1, tile + 2 * overlap + 2, tile + 2 * overlap + 2))


def web_sweep(tile: int | None, overlap: int) -> tuple[tuple[int, int, int], ...]:
    """The shapes of the onnxruntime-web check: small and odd ones, batch 2, and a 2x2 grid of tiles (WebAssembly
    on one thread is several times slower than the native build)."""
    small = ((1, 5, 3), (1, 37, 53), (2, 99, 131), (1, 256, 256))
    return small if tile is None else (*small, sweep(tile, overlap)[-1])


def other_engines(args: argparse.Namespace, staged: list[Path], outputs: list[Path], tile: int | None) -> list:
    """The other engines asked for, each as (name -> app run, shapes): onnxruntime-web on both files under Node.js
    (``--check-web``) and in Chromium (``--check-browser``), OpenVINO on the .onnx (``--check-openvino``)."""
    checks = []
    for attribute, browser, _, where in WEB_CHECKS:
        if getattr(args, attribute):
            from export.app_web import web_app_run

            checks.append(({f"{path.name} ({where})": web_app_run(stage, browser=browser)
                            for stage, path in zip(staged, outputs) if path.suffix in (".onnx", ".ort")},
                           web_sweep(tile, args.overlap)))
    if args.check_openvino:
        from export.app_check import openvino_app_run

        checks.append(({f"{outputs[0].name} (OpenVINO)": openvino_app_run(staged[0])}, sweep(tile, args.overlap)))
    return checks


def outputs_of(args: argparse.Namespace, network: Path) -> list[Path]:
    """The files this run writes: the app .onnx, then (unless ``--no-ort``) its .ort and operator list."""
    named = network.name == int8_onnx_path(DEFAULT_ONNX, "ort").name and network.parent == DEFAULT_ONNX.parent
    # the shipped INT8 file's app graph goes to the engines folder, never beside the package's weights
    app = args.output or app_path(onnx_path(network.stem) if named else network, args.channel_order)
    if app.suffix.lower() != ".onnx":
        raise ExportError(f"{app}: the app graph is written as .onnx (its .ort goes next to it)")
    return [app] if args.no_ort else [app, app.with_suffix(".ort"), app.with_name(app.stem + CONFIG_SUFFIX)]


def make(args: argparse.Namespace) -> tuple[Path, list[Path], list[AppReport]]:
    """Wrap, check and write: the network file, the files written and the checks. ExportError (one line, the failing
    table after it) on any refusal."""
    import onnx

    from banet.checkpoint import load_checkpoint
    from export.app_check import check_app_graphs, onnxruntime_app_run
    from export.app_graph import save_ort_format, wrap_for_apps
    from export.onnx_export import torch_forward
    from export.onnx_file import claim_staging, refused_path, writing
    from export.reference_cache import cached_forward
    from export.runtime_forwards import onnxruntime_forward

    for attribute, browser, option, _ in WEB_CHECKS:
        if getattr(args, attribute):
            from export.app_web import web_problem

            problem = web_problem(browser)
            if problem:
                raise ExportError(f"{option}: {problem}")
    weights = Path(args.weights or default_weights_path())
    check_input(weights, error=ExportError, what="checkpoint (--weights)")
    network = network_file(args, weights)
    outputs = outputs_of(args, network)
    inputs = {"the network ONNX": network, "the checkpoint (--weights)": weights}
    for path in outputs:
        check_output(path, force=args.force, error=ExportError, suffix=path.suffix, inputs=inputs, option="--output")
    if args.report is not None:
        check_output(args.report, force=args.force, error=ExportError, suffix=".json", option="--report",
                     inputs={**inputs, **{str(p): p for p in outputs}})
    metadata = read_onnx_metadata(network)
    problem = stale_source(metadata, network, weights)
    if problem is not None:
        raise ExportError(f"{problem}; pass the checkpoint it was exported from as --weights, or re-export it")
    log.info("wrapping %s (%s) for apps: uint8 %s in and out", network, metadata.precision, args.channel_order)
    tile = args.tile or None
    try:
        app_model = wrap_for_apps(onnx.load(str(network)), metadata, args.channel_order, tile, args.overlap)
    except ValueError as exc:  # a tile below the export's smallest side, an opset too old: one line
        raise ExportError(f"{network}: {exc}") from None

    with writing(outputs[0], ExportError):  # a second run on these outputs is refused, never mixed with this
        for path in outputs:  # again, now that no other run can write them meanwhile
            check_output(path, force=args.force, error=ExportError, suffix=path.suffix, inputs=inputs,
                         option="--output")
        staged = [claim_staging(path) for path in outputs]
        try:
            write_atomic(staged[0], app_model.SerializeToString())
            runs = {outputs[0].name: onnxruntime_app_run(staged[0])}
            if not args.no_ort:
                save_ort_format(staged[0], staged[1], staged[2])
                _name_config(staged[2], outputs[1])
                runs[outputs[1].name] = onnxruntime_app_run(staged[1])
            model = load_checkpoint(weights).model.eval().float()
            pytorch = cached_forward(torch_forward(model), model)
            network_run = onnxruntime_forward(network)  # one session for every check
            reports = check_app_graphs(runs, network_run, pytorch, metadata, args.channel_order,
                                       shapes=sweep(tile, args.overlap) + tuple(args.verify_sizes), tile=tile,
                                       overlap=args.overlap)
            for engines, shapes in other_engines(args, staged, outputs, tile):  # held to the drift floor alone
                reports += check_app_graphs(engines, network_run, pytorch, metadata,
                                            args.channel_order, shapes=shapes, tile=tile, overlap=args.overlap,
                                            drift_only=tuple(engines))
            for report in reports:
                log.info("%s", report.table())
            if not all(report.passed for report in reports):
                kept = []
                for stage, path in zip(staged, outputs):
                    if stage.exists() and path.suffix in (".onnx", ".ort"):
                        stage.replace(refused_path(path))
                        kept.append(str(refused_path(path)))
                failed = [r for r in reports if not r.passed]
                raise CheckFailed(f"the app graph failed its check on {', '.join(r.artifact for r in failed)}; left at "
                                  f"{', '.join(kept)} for inspection, nothing written:\n"
                                  + "\n".join(r.table() for r in failed), network, reports)
            for stage, path in zip(staged, outputs):
                stage.replace(path)
        finally:
            for stage in staged:
                stage.unlink(missing_ok=True)
    return network, outputs, reports


def _name_config(config: Path, ort_file: Path) -> None:
    """The converter's operator list names the temporary file it read: name the .ort it goes with instead."""
    lines = config.read_text().splitlines()
    lines = [f"# - {ort_file.name}" if line.startswith("# - ") else line for line in lines]
    config.write_text("\n".join(lines) + "\n")


def _write_report(args: argparse.Namespace, network: Path, outputs: list[Path], reports: list[AppReport]) -> bool:
    """``--report``: the checks and the files written (none when a check failed); False (said) if it cannot."""
    files = {p.name: {"bytes": p.stat().st_size, "mb": p.stat().st_size / 1e6} for p in outputs}
    record = {"network": network.name, "precision": reports[0].precision, "channel_order": args.channel_order,
              "tile": args.tile or None, "overlap": args.overlap, "passed": all(r.passed for r in reports),
              "files": files, "checks": [r.to_dict() for r in reports]}
    try:
        write_atomic(args.report, json.dumps(record, indent=2).encode())
    except OSError as exc:
        print(f"error: {write_error(exc, args.report)}", file=sys.stderr)
        return False
    return True


@stoppable
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.onnx is not None and args.precision != "fp32":
        print("error: --onnx names the network file itself; its precision is read from it (drop --precision)",
              file=sys.stderr)
        return 2
    if args.tile == 0 and args.overlap is not None:
        print(f"error: --overlap {args.overlap} overlaps tiles, and --tile 0 runs whole images: drop one of them",
              file=sys.stderr)
        return 2
    args.overlap = 32 if args.overlap is None else args.overlap
    if args.overlap < 1 or args.tile < 0 or (args.tile and (args.tile % 2 or args.tile <= 2 * args.overlap)):
        print(f"error: --tile {args.tile} --overlap {args.overlap}: the tile is 0 (whole images) or even and more "
              "than twice the overlap, which is at least 1", file=sys.stderr)
        return 2
    problem = sweep_problem(args.verify_sizes)  # as export/to_onnx.py: before a minute of work, not after it
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        if args.output is None:
            log.info("%s", engines_rule())
        network, outputs, reports = make(args)
    except CheckFailed as exc:  # the report says what failed where, when one was asked for
        print(f"error: {exc}", file=sys.stderr)
        if args.report:
            _write_report(args, exc.network, [], exc.reports)
        return 1
    except (ExportError, ArtifactError, CheckpointError, FileNotFoundError) as exc:  # CheckpointError: --weights
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the system refuses, a full disk: one line, not a traceback
        print(f"error: {write_error(exc, Path(exc.filename or '.'))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable)
        return stopped_line(exc, "nothing written")
    if args.quiet:
        print("\n".join(report.table() for report in reports))
    if args.report and not _write_report(args, network, outputs, reports):
        return 1
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in outputs if p.suffix in (".onnx", ".ort"))
    native = [report for report in reports if report.hold_pixels]
    worst = min(report.worst_psnr_db for report in native)
    same = min(min(r.identical for r in report.results) for report in native)
    line = (f"wrote {sizes} (uint8 {args.channel_order} in and out); checked on {len(native[0].results)} shapes: "
            f">= {same:.4%} of pixels equal to the runtime's, worst {worst:.1f} dB from PyTorch FP32")
    for engine in (*(name for *_, name in WEB_CHECKS), "OpenVINO"):
        other = [report for report in reports if not report.hold_pixels and report.artifact.endswith(f"({engine})")]
        if other:
            line += (f"; {engine.split(',')[0]}: worst {min(r.worst_psnr_db for r in other):.1f} dB, >= "
                     f"{min(min(x.identical for x in r.results) for r in other):.4%} equal")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
