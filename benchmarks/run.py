"""Benchmark every backend x precision available here, side by side in one run, with ratios and plots.

    python -m benchmarks.run                 # default + full network, writes benchmarks/results/
    python -m benchmarks.run --quick         # 256x256 only, few repeats (a smoke run)
    banet-benchmark --sizes 256x256 720x1280 --batches 1 4

Each configuration is warmed up, then timed (CUDA events on GPUs); p50/p95/p99, images/s and peak host
(and device) memory are reported, with every latency also as a ratio to PyTorch eager FP32 measured in the
same run. Configurations a machine cannot run in reasonable time are skipped with the reason printed. Model
cost (parameters, FLOPs) and the latency floor of named GPUs are printed next to the measurements; floors are
estimates from peak throughput and are labelled as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import functools
import json
import logging
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:  # a thin install (no torch, onnx...): one line naming what to install, not a traceback
    from banet.artifacts import engine_path, engines_dir, int8_onnx_files, is_failed, onnx_path
    from banet.cli_types import number, path_arg, threads
    from banet.config import FULL, BANetConfig
    from banet.errors import ArtifactError, first_line
    from banet.machine import cpu_name, physical_memory, results_stem, slug
    from banet.outputs import same_file
    from banet.shapes import MAX_BATCH, hw_text, parse_batch
    from benchmarks import cost
    from benchmarks.cli import (
        BenchmarkError,
        add_force,
        add_output,
        check_repeated,
        check_results,
        run_main,
        size_type,
        write_files,
    )
    from benchmarks.report import DRIFT_REPORT
    from benchmarks.systems import (
        System,
        Unavailable,
        deblurrer_torch_system,
        onnxruntime_system,
        openvino_system,
        tensorrt_system,
        torch_system,
    )
    from benchmarks.timing import PeakRssSampler, time_call, time_interleaved
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "python -m benchmarks.run")
    raise

log = logging.getLogger("benchmarks")
#: Results go under the current project (where the command is run), never into an installed package.
#: The systems a --quick smoke run compares (unless --only says otherwise): one per engine, no compilation wait.
QUICK_SYSTEMS = ("torch eager", "onnxruntime fp32", "openvino fp32")


@dataclass
class Model:
    label: str
    config: BANetConfig
    weights: Path
    sizes: list[tuple[int, int]]
    note: str = ""


def machine_name() -> str:
    """The GPU's name where there is one, else the CPU's."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return cpu_name()




def label_arg(text: str) -> str:
    """A results-file label: letters, digits and hyphens (it becomes part of a file name; ``_`` separates the
    name's fields)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,39}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits and hyphens (at most 40), e.g. int8-ov")
    return text


def build_systems(model: Model, workdir: Path, threads: int | None, int8: dict[str, Path]) -> list:
    """(factory, name) pairs for every system this run compares; factories raise Unavailable with the reason.

    ONNX Runtime and OpenVINO run each ONNX file both ways: one dynamic-shape session/model and one compiled per
    shape (``static``: what the runtime's tiles and same-sized batches hit).
    """
    from export.artifact_chain import exported_onnx

    @functools.cache
    def onnx_fp32() -> Path:
        """Exported (and verified) once, when the first system that runs it is built."""
        return exported_onnx(model.weights, "fp32", workdir / f"{slug(model.label)}.onnx",
                             verify_shapes=[(1, 64, 64), (2, 38, 50)])

    factories = [(lambda v=v: torch_system(model.weights, v), f"torch {v}")
                 for v in ("eager", "fp16", "channels_last", "compile", "cudagraphs")]
    factories += [(lambda h=half: deblurrer_torch_system(model.weights, half=h),
                   f"Deblurrer torch cuda (graphs{', fp16' if half else ''}, folded)") for half in (False, True)]
    factories.append((lambda: deblurrer_torch_system(model.weights, device="cpu"),
                      "Deblurrer torch cpu (channels_last, folded)"))
    factories.append((lambda: deblurrer_torch_system(model.weights, device="cpu", bf16=True),
                      "Deblurrer torch cpu (bf16, channels_last, folded)"))
    onnx_files = [("fp32", None, onnx_fp32)] + [("int8", f, lambda p=p: p) for f, p in int8.items()]
    # (engine, system maker, static, tag): each backend's default mode carries no tag
    modes = [("onnxruntime", onnxruntime_system, False, None), ("onnxruntime", onnxruntime_system, True, "static"),
             ("openvino", openvino_system, True, None), ("openvino", openvino_system, False, "dynamic")]
    for precision, flavour, path in onnx_files:
        for engine, make, static, variant in modes:
            if flavour == "ov" and engine != "openvino":
                continue  # OpenVINO's own file (calibration.quantize --flavour ov): ONNX Runtime runs it slowly
            tags = ", ".join(t for t in (flavour, variant) if t)
            name = f"{engine} {precision}" + (f" ({tags})" if tags else "")
            factories.append((lambda m=make, p=path, n=name, s=static: m(p(), n, threads, static=s), name))
    # Deblurrer(precision="int8") on OpenVINO where the CPU has bfloat16 units: the ov file's float layers in bf16
    if "ov" in int8:
        factories.append((lambda p=int8["ov"]: openvino_system(p, "openvino int8 (ov, bf16)", threads,
                                                               inference_precision="bf16"), "openvino int8 (ov, bf16)"))
    # Deblurrer(precision="bf16"): the FP32 file on OpenVINO in bfloat16, where the CPU has the units
    factories.append((lambda: openvino_system(onnx_fp32(), "openvino bf16", threads, inference_precision="bf16"),
                      "openvino bf16"))
    # the peers that measure the backend's graph rewrites (runtime/backends/openvino_rewrites.py) in the same run:
    # the default of each precision against the other choice (bf16 rewrites, f32 compiles the file as written)
    for compute, tag, rewrite, variant in (("f32", "fp32", True, "rewritten"), ("bf16", "bf16", False, "as written")):
        name = f"openvino {tag} ({variant})"
        factories.append((lambda c=compute, n=name, r=rewrite: openvino_system(
            onnx_fp32(), n, threads, inference_precision=c, rewrite=r), name))
    stem = model.weights.stem
    for precision in ("fp32", "fp16", "int8"):
        # build_trt.py names an engine for its targets (<stem>_fp16_sm75.engine); every one built is a system
        built = sorted(p for p in engines_dir().glob(f"{stem}_{precision}*.engine") if not is_failed(p))
        for engine in built or [engine_path(stem, precision)]:
            targets = engine.stem[len(f"{stem}_{precision}"):].strip("_")
            name = f"tensorrt {precision}" + (f" ({targets})" if targets else "")
            factories.append((lambda e=engine, p=precision, n=name: _engine(e, p, n), name))
    return factories


def _engine(path: Path, precision: str, name: str) -> System:
    if not path.exists():
        flag = "" if precision == "fp32" else f" --{precision}"
        raise Unavailable(f"no engine at {path} (build it with: python export/build_trt.py{flag})")
    return tensorrt_system(path, name)


def set_torch_threads(threads: int | None) -> int | None:
    """PyTorch's intra-op threads for this part of the run (None: all cores), so every peer gets the same count;
    returns the count before (None without PyTorch), which :func:`benchmark` puts back when it ends."""
    try:
        import torch
    except ImportError:
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return before


def benchmark(models: list[Model], batches: list[int], repeats: int, warmup: int, max_call_s: float,
              threads: list[int | None], int8: dict[str, Path], only: list[str] | None = None) -> dict:
    """Every system x size x batch x thread count; the systems of one configuration are timed interleaved."""
    rows, skips, costs = [], [], []
    before = set_torch_threads(None)
    try:
        _benchmark_into(rows, skips, costs, models, batches, repeats, warmup, max_call_s, threads, int8, only)
    finally:  # the caller's PyTorch keeps its own thread count (a test, a notebook)
        if before is not None:
            set_torch_threads(before)
    _add_ratios(rows)
    return {"rows": rows, "skipped": skips, "cost": costs}


def _benchmark_into(rows: list, skips: list, costs: list, models: list[Model], batches: list[int], repeats: int,
                    warmup: int, max_call_s: float, threads: list[int | None], int8: dict[str, Path],
                    only: list[str] | None) -> None:
    """:func:`benchmark`'s loops, appending to its ``rows``, ``skips`` and ``costs``."""
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for h, w in model.sizes:
                total = cost.flops(model.config, h, w)
                entry = {"model": model.label, "size": hw_text(h, w), "gflop_per_image": total / 1e9,
                         "parameters": cost.parameters(model.config),
                         "operations_per_forward": cost.operations(model.config, h, w),
                         "floor_ms_estimate": {g: {"fp32": cost.lower_bound_ms(total, p.fp32),
                                                   "fp16": cost.lower_bound_ms(total, p.fp16_fp32acc),
                                                   "int8": cost.lower_bound_ms(total, p.int8)}
                                               for g, p in cost.GPUS.items()}}
                costs.append(entry)
            for count in threads:
                set_torch_threads(count)
                systems = []
                for factory, name in build_systems(model, Path(tmp), count,
                                                   int8 if model.label.startswith("default") else {}):
                    if only and not any(fnmatch.fnmatch(name, pattern) for pattern in only):
                        continue
                    try:
                        systems.append(factory())
                    except (Unavailable, ArtifactError) as exc:  # not installed here, or a file it cannot read
                        skips.append({"model": model.label, "system": name, "reason": str(exc)})
                        log.info("skip %s / %s: %s", model.label, name, exc)
                try:
                    rows += _time_systems(model, systems, count, batches, repeats, warmup, max_call_s, skips)
                finally:
                    for system in systems:
                        system.close()


def _time_systems(model: Model, systems: list[System], threads: int | None, batches, repeats, warmup, max_call_s,
                  skips) -> list[dict]:
    """Warm each system up alone (its peak host memory is sampled then), then time them all in rounds."""
    from export.parity import photo_batch

    rows = []
    per_pixel_s: dict[str, float] = {}  # measured seconds per pixel, to skip configurations that would take too long
    for h, w in sorted(model.sizes, key=lambda s: s[0] * s[1]):
        for n in sorted(batches):
            x = photo_batch(n, h, w)
            timed, peaks, started = {}, {}, time.perf_counter()
            for system in systems:
                estimate = per_pixel_s.get(system.name, 0.0) * n * h * w
                if estimate > max_call_s:
                    skips.append({"model": model.label, "system": system.name, "size": hw_text(h, w), "batch": n,
                                  "threads": threads, "reason": f"one call would take about {estimate:.0f} s here "
                                                                f"(limit {max_call_s:g} s)"})
                    continue
                run = functools.partial(system.run, x)
                with PeakRssSampler() as mem:
                    # Long calls need one warm-up only (caches, compiled shapes and allocations are settled after it).
                    warm = time_call(run, warmup=max(warmup - 1, 0) if estimate <= 2.0 else 0, repeats=1,
                                     cuda=system.cuda)
                peaks[system.name] = (mem.peak - mem.baseline) / 1e6
                # first estimate only (a first call may include compiling the shape); the timed p50 replaces it
                per_pixel_s.setdefault(system.name, warm.p50 / 1e3 / (n * h * w))
                timed[system.name] = (run, system.cuda)
            timings = time_interleaved(timed, repeats=repeats, budget_s=max(3 * max_call_s, 10.0) * len(timed))
            elapsed = time.perf_counter() - started
            for system in systems:
                if system.name not in timings:
                    continue
                timing = timings[system.name]
                per_pixel_s[system.name] = timing.p50 / 1e3 / (n * h * w)
                rows.append({"model": model.label, "system": system.name, "precision": system.precision,
                             "device": system.device, "threads": threads, "size": hw_text(h, w), "batch": n,
                             "samples": len(timing.samples_ms), "p50_ms": timing.p50, "p95_ms": timing.p95,
                             "p99_ms": timing.p99, "images_per_s": n / (timing.p50 / 1e3),
                             "peak_host_mb": peaks[system.name],
                             "peak_device_mb": (system.device_peak() or 0) / 1e6 or None, "wall_s": elapsed})
                log.info("%s %s %s b%d t%s: p50 %.1f ms", model.label, system.name, hw_text(h, w), n,
                         threads or "all", timing.p50)
    return rows


def _add_ratios(rows: list[dict]) -> None:
    """Speed-up vs PyTorch eager FP32 at the same model, size, batch and threads (both measured in this run)."""
    base = {(r["model"], r["size"], r["batch"], r.get("threads")): r["p50_ms"] for r in rows
            if r["system"] == "torch eager"}
    for r in rows:
        ref = base.get((r["model"], r["size"], r["batch"], r.get("threads")))
        r["speedup_vs_torch_eager"] = ref / r["p50_ms"] if ref else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None, help="default-model checkpoint (default: embedded)")
    parser.add_argument("--sizes", type=size_type(even=True), nargs="+",
                        default=[(256, 256), (720, 1280), (1080, 1920)], metavar="HxW",
                        help="resolutions for the default network, each side even (the network's input, unpadded; "
                             "default 256x256 720x1280 1080x1920)")
    parser.add_argument("--full-sizes", type=size_type(even=True), nargs="*", default=[(256, 256)], metavar="HxW",
                        help="resolutions for the full stack-10 network (default 256x256; none to skip)")
    parser.add_argument("--batches", type=parse_batch, nargs="+", default=[1, 4], metavar="N",
                        help=f"batch sizes, 1 to {MAX_BATCH} (default 1 4)")
    parser.add_argument("--repeats", type=number(int, 1), default=10,
                        help="timed calls per configuration, at most (default 10; fewer when a call is slow)")
    parser.add_argument("--warmup", type=number(int, 0), default=2, help="untimed calls before timing (default 2)")
    parser.add_argument("--max-call-s", type=number(float, 0, low_open=True), default=16.0, metavar="S",
                        help="skip (with the reason) configurations whose single call would take longer than S "
                             "seconds, estimated from a smaller size (default 16)")
    parser.add_argument("--threads", type=threads(0), nargs="+", default=[0], metavar="N",
                        help="intra-op threads for every system, one pass per value (default 0: all cores), e.g. "
                             "--threads 1 2")
    parser.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                        help="run only the systems whose name matches a pattern (shell-style, e.g. 'torch eager' "
                             "'openvino*'); a pattern that matches no system is refused, listing the names")
    parser.add_argument("--int8", type=path_arg, nargs="*", default=None,
                        help="INT8 Q/DQ ONNX files to include (default: engines/*_int8*.onnx of the default model)")
    add_output(parser, None)
    parser.add_argument("--label", type=label_arg, default=None,
                        help="name the files <label>_<machine>_<date> instead: a run that answers one question "
                             "(e.g. --label int8-ov with --only), kept beside the machine's main tables")
    add_force(parser)
    parser.add_argument("--drift-report", type=path_arg, default=None,
                        help="drift report of the default weights (python -m calibration.drift) for quality columns "
                             f"(default {DRIFT_REPORT}; none there: no quality columns)")
    parser.add_argument("--engines", type=path_arg, default=None,
                        help="folder whose engine manifests (build time, size) go into the results (default: the "
                             "engines folder, $BANET_ENGINES or the checkout's engines/)")
    parser.add_argument("--e2e", type=size_type(), default=None, metavar="HxW",
                        help="also run one photo of this size through python -m runtime per backend and precision "
                             "(wall time and peak memory of the whole command), e.g. --e2e 3000x4000")
    parser.add_argument("--quick", action="store_true",
                        help=f"256x256, batch 1, 3 repeats, systems {', '.join(QUICK_SYSTEMS)}: a smoke run "
                             "(replaces --sizes, --full-sizes, --batches, --repeats and --warmup)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def plot_names(stem: str) -> list[str]:
    """Every PNG :func:`benchmarks.report.plots` may write for ``stem`` (checked before the run)."""
    return [f"{stem}_latency_default.png", f"{stem}_latency_full.png", f"{stem}_quality_speed.png"]


def check_memory(models: list[Model], batches: list[int]) -> None:
    """Refuse (before any work) a configuration whose activations alone would not fit in this machine's memory,
    by the network's estimate (:func:`banet.config.activation_bytes_per_pixel`): it would swap or be killed."""
    from banet.config import activation_bytes_per_pixel

    total = physical_memory()
    if not total:
        return
    for model in models:
        for h, w in model.sizes:
            for n in batches:
                need = n * h * w * activation_bytes_per_pixel(model.config)
                if need > total:
                    raise BenchmarkError(f"{model.label.split(' (')[0]} network at {hw_text(h, w)}, batch {n}, needs "
                                         f"about {need / 1e9:.3g} GB of working memory; this machine has "
                                         f"{total / 1e9:.3g} GB: use smaller --sizes or --batches")


def check_only(patterns: list[str], names: list[str]) -> None:
    """Refuse a ``--only`` pattern that matches none of ``names`` (a typo would time nothing and write empty
    results)."""
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in names)]
    if unknown:
        raise BenchmarkError(f"--only {' '.join(repr(p) for p in unknown)} matches no system; the systems are: "
                             + ", ".join(dict.fromkeys(names)))


def read_drift_report(path: Path | None) -> Path:
    """The drift report for the quality columns: ``path`` as given, refused where it is missing, a folder or not a
    JSON report; None: :data:`DRIFT_REPORT`, where a missing one means no quality columns (a typed path that is not
    there must not quietly drop them)."""
    if path is None:
        path = DRIFT_REPORT
        if not path.exists():
            return path
    elif not path.exists():
        raise BenchmarkError(f"--drift-report {path}: no such file (python -m calibration.drift writes one)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"--drift-report {path}: not a readable JSON drift report ({first_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise BenchmarkError(f"--drift-report {path}: not a drift report (python -m calibration.drift writes them)")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args: argparse.Namespace) -> int:
    from banet.defaults import default_weights_path

    weights = args.weights or default_weights_path()
    if args.quick:
        args.sizes, args.full_sizes, args.batches, args.repeats, args.warmup = [(256, 256)], [], [1], 3, 1
        args.only = args.only or list(QUICK_SYSTEMS)
    check_repeated({"--sizes": args.sizes, "--full-sizes": args.full_sizes, "--batches": args.batches,
                    "--threads": args.threads})
    from banet.checkpoint import file_sha256, load_checkpoint, save_checkpoint

    default_config = load_checkpoint(weights).config  # a missing or unreadable checkpoint: one line
    models = [Model(f"default ({default_config.describe()})", default_config, weights, args.sizes)]
    if args.full_sizes:
        models.append(Model(f"full ({FULL.describe()}, random weights)", FULL, Path("full_random.safetensors"),
                            args.full_sizes, "timing does not depend on the weights"))
    from calibration.drift import check_int8_source, read_int8
    from calibration.int8 import QuantizeError

    try:
        int8_files = [read_int8(path) for path in args.int8] if args.int8 is not None else \
            int8_onnx_files(onnx_path(weights.stem))
    except QuantizeError as exc:
        raise BenchmarkError(f"--int8 {first_line(exc)}") from None
    try:  # another model's INT8 file would be timed under this model's label
        check_int8_source(int8_files, weights, given=args.int8 is not None)
    except QuantizeError as exc:
        raise BenchmarkError(first_line(exc)) from None
    if args.e2e and not same_file(weights, default_weights_path()):
        raise BenchmarkError("--e2e times the embedded default model through python -m runtime, not --weights "
                             f"{weights}; leave --weights out for it, or run it without --e2e")
    int8 = {p.stem.split("_int8")[-1].strip("_") or "qdq": p for p in int8_files}
    if args.only:
        names = [name for model in models for _, name in build_systems(model, Path(tempfile.gettempdir()), None,
                                                                        int8 if model is models[0] else {})]
        check_only(args.only, names)
    check_memory(models, args.batches)
    args.drift_report = read_drift_report(args.drift_report)
    if args.engines is not None and not args.engines.is_dir():
        raise BenchmarkError(f"--engines {args.engines}: no such folder (it holds the engines and their manifests)")
    # everything the run will write, named now (the date too: a run past midnight writes the names checked)
    machine, date = machine_name(), dt.date.today().isoformat()
    stem = results_stem(args.label, machine, date)
    # the plots too, with --no-plots: a run's files are its table and its plots, so none of another run stays beside
    check_results(args.output, [f"{stem}.json", f"{stem}.md", *plot_names(stem)],
                  args.force, inputs={"the checkpoint (--weights)": weights, "the drift report": args.drift_report})

    started = time.perf_counter()
    threads = [t or None for t in args.threads]
    with tempfile.TemporaryDirectory() as tmp:
        if args.full_sizes:
            import torch

            from banet.model import BANet

            torch.manual_seed(0)
            models[1].weights = save_checkpoint(BANet(FULL), Path(tmp) / "full_random.safetensors")
        result = benchmark(models, args.batches, args.repeats, args.warmup, args.max_call_s, threads, int8,
                           args.only)
    if args.e2e:
        from benchmarks.end_to_end import end_to_end

        result["end_to_end"] = end_to_end(*args.e2e)
    result.update({"machine": machine, "date": date, "python": platform.python_version(),
                   "total_s": time.perf_counter() - started, "weights": str(weights), "threads": args.threads,
                   "weights_sha256": file_sha256(weights)})
    try:
        import torch

        result["torch"] = torch.__version__
    except ImportError:
        pass
    from benchmarks.report import attach_quality, engine_builds, markdown, plots

    attach_quality(result, args.drift_report)
    result["engines"] = engine_builds(args.engines or engines_dir())
    path = args.output / stem
    write_files({Path(f"{path}.json"): json.dumps(result, indent=2).encode(),
                 Path(f"{path}.md"): markdown(result).encode()})
    drawn = set() if args.no_plots else {Path(p).name for p in plots(result, path)}
    for name in plot_names(stem):  # an earlier run's plot of this name (replaced with --force) would show its data
        if name not in drawn and (args.output / name).is_file():
            (args.output / name).unlink()
            print(f"removed {args.output / name}: a plot of the run these results replace")
    print(markdown(result))
    print(f"wrote {path}.json, {path}.md" + ("" if args.no_plots else ", and plots") +
          f" in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
