"""The runtime's own PyTorch path on a GPU, next to the compute floor: is it at the roofline yet?

    python -m benchmarks.gpu_roofline --output out/gpu_checks/roofline        # on a CUDA GPU
    python -m benchmarks.gpu_roofline --cpu-ok --sizes 64x64 --repeats 3      # a smoke run on a CPU

Each variant is a ``Deblurrer(default checkpoint, backend="torch", device="cuda", ...)`` exactly as an app opens
it (eager FP32, FP16, FP16 + channels_last; the same three through CUDA graphs, the default on CUDA; all with the
attention folded, the default, and eager FP32 and graphs FP16 also as trained), timed three ways at batch 1 after
warm-up, with CUDA events and a synchronisation per call:

- ``run``: the backend's call on an NCHW float32 host array (host copies and transfers included);
- ``deblur``: ``Deblurrer.deblur`` on an HxWx3 uint8 image (pre- and post-processing too), under the default
  memory budget an app gets (``"auto"``: a third of the GPU's memory; each row records it and whether the size
  ran in tiles; the CPU smoke run has no budget);
- ``replay``: the captured CUDA graph alone (graph variants only): the device time the floor compares with.

The floor is :mod:`benchmarks.cost`'s estimate at the GPU's peak throughput (an estimate, not a measurement).
Drift: each variant's output vs eager FP32 as trained at the largest size, in dB (the project's PSNR,
``export.parity.psnr_db``: restored images in [0, 1], identical outputs at its cap of 200 dB).
Results go to ``OUTPUT/roofline_<GPU>_<date>.{json,md}`` (``banet.machine.results_stem``), each file rewritten
whole (never torn) after every variant, so a time limit that stops the run leaves the rows measured so far.
On a CPU (``--cpu-ok``, for smoke tests only) FP16 variants are skipped and the graph variants replay a stand-in
capture that runs eagerly, so every code path runs without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from banet.errors import first_line
from banet.shapes import hw_text

log = logging.getLogger("benchmarks.gpu_roofline")

#: (name, half, channels_last, cuda_graph, fold_attention); the first, the checkpoint as trained, is the reference
#: for ratios and drift; the rest run the attention folded (the backend's default, :mod:`banet.folding`) but the
#: last, which shows what folding buys the fastest path
VARIANTS = (
    ("eager fp32 trained", False, False, False, False),
    ("eager fp32", False, False, False, True),
    ("eager fp16", True, False, False, True),
    ("eager fp16 channels_last", True, True, False, True),
    ("graphs fp32", False, False, True, True),
    ("graphs fp16", True, False, True, True),
    ("graphs fp16 channels_last", True, True, True, True),
    ("graphs fp16 trained", True, False, True, False),
)
#: The acceptance targets of issue #30 for the runtime's path (FP16, batch 1), in ms.
TARGETS_MS = {"256x256": 1.0, "1080x1920": 4.0}
DRIFT_TARGET_DB = 50.0


def _stand_in_capture(forward, static_in, pool):
    """A CPU stand-in for :func:`banet.cuda_graphs.capture_cuda_graph` (smoke runs only): replay reruns eagerly."""
    import torch

    static_out = forward(static_in).clone()

    def replay() -> None:
        with torch.inference_mode():
            static_out.copy_(forward(static_in))

    return replay, static_out, lambda: None


def environment() -> dict:
    """GPU, driver, CUDA and library versions (what a result is only valid for)."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, compute_capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1), driver=_driver())
    else:
        env.update(device=f"CPU ({platform.processor() or platform.machine()})", driver=None)
    return env


def _driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def floors(config, sizes: list[tuple[int, int]]) -> dict:
    """{size: {gpu: {precision: ms}}}: the latency at 100% of each named GPU's peak (estimates)."""
    from benchmarks import cost

    result = {}
    for h, w in sizes:
        total = cost.flops(config, h, w)
        result[hw_text(h, w)] = {"gflop": total / 1e9, **{
            gpu: {"fp32": cost.lower_bound_ms(total, peak.fp32), "fp16": cost.lower_bound_ms(total, peak.fp16_fp32acc)}
            for gpu, peak in cost.GPUS.items() if gpu in ("H100 SXM", "H200")}}
    return result


def measure(weights: Path, sizes: list[tuple[int, int]], repeats: int, warmup: int, cpu_ok: bool,
            variants: list[str] | None, write) -> dict:
    """Time every variant at every size; ``write(result)`` is called after each variant."""
    import torch

    from banet.checkpoint import load_checkpoint
    from benchmarks.timing import time_call
    from export.parity import photo_batch, psnr_db
    from runtime import Deblurrer

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    config = load_checkpoint(weights).config
    result = {"environment": environment(), "weights": str(weights), "config": config.describe(), "batch": 1,
              "repeats": repeats, "warmup": warmup, "floor_ms_estimate": floors(config, sizes), "rows": [],
              "skipped": [], "drift": [], "targets_ms": TARGETS_MS}
    largest = max(sizes, key=lambda s: s[0] * s[1])
    inputs = {s: photo_batch(1, *s) for s in sizes}
    images = {s: np.clip((np.transpose(inputs[s][0], (1, 2, 0)) + 0.5) * 255, 0, 255).astype(np.uint8)
              for s in sizes}
    reference = None
    for name, half, channels_last, graphs, fold in VARIANTS:
        if variants and name not in variants:
            continue
        if half and not cuda:
            result["skipped"].append({"variant": name, "reason": "FP16 needs a CUDA GPU"})
            write(result)
            continue
        try:
            deblur = Deblurrer(weights, backend="torch", device=device, half=half, channels_last=channels_last,
                               cuda_graph=graphs and cuda, fold_attention=fold,
                               memory_budget_mb="auto" if cuda else None)
        except Exception as exc:  # one variant failing to open leaves the others
            result["skipped"].append({"variant": name, "reason": first_line(exc)})
            write(result)
            continue
        backend = deblur.backend
        if graphs and not cuda:  # smoke run: the graph bookkeeping with an eager stand-in
            from banet.cuda_graphs import GraphRunner

            runner = backend.runner
            backend.runner = GraphRunner(runner.forward, runner.device, runner.dtype, runner.memory_format,
                                         capture=_stand_in_capture)
        try:
            for size in sorted(sizes, key=lambda s: s[0] * s[1]):
                x, image = inputs[size], images[size]
                started = time.perf_counter()
                out = backend.run(x)  # the first call captures the graph of this shape
                first_ms = (time.perf_counter() - started) * 1e3
                run = time_call(functools.partial(backend.run, x), warmup=warmup, repeats=repeats, cuda=cuda)
                whole = time_call(functools.partial(deblur.deblur, image), warmup=1, repeats=max(3, repeats // 2),
                                  cuda=cuda)
                row = {"variant": name, "size": hw_text(*size), "half": half, "channels_last": channels_last,
                       "attention": backend.metadata.attention,
                       "cuda_graph": backend.cuda_graph and cuda, "first_call_ms": first_ms,
                       "memory_budget_mb": deblur.memory_budget_mb, "tiled": deblur.tile_for(*size) is not None,
                       "capture": ("CUDA graph" if cuda else "stand-in (CPU smoke run)") if graphs else None,
                       **{f"run_{k}_ms": getattr(run, k) for k in ("p50", "p95", "p99")},
                       **{f"deblur_{k}_ms": getattr(whole, k) for k in ("p50", "p95", "p99")}}
                replay = backend.runner.replay_function(x.shape) if graphs else None
                if replay is not None:
                    device_only = time_call(replay, warmup=warmup, repeats=repeats, cuda=cuda)
                    row.update({f"replay_{k}_ms": getattr(device_only, k) for k in ("p50", "p95", "p99")})
                result["rows"].append(row)
                log.info("%-26s %-10s run p50 %8.2f ms  deblur p50 %8.2f ms%s", name, row["size"], run.p50,
                         whole.p50, f"  replay p50 {row['replay_p50_ms']:.2f} ms" if "replay_p50_ms" in row else "")
                if size == largest and name == VARIANTS[0][0]:
                    reference = out
                if size == largest and reference is not None:
                    # a NaN or inf (FP16 overflow) is reported as such, never as a PSNR
                    finite = bool(np.isfinite(out).all())
                    result["drift"].append({"variant": name, "size": hw_text(*size), "psnr_db_vs_eager_fp32":
                                            psnr_db(reference, out) if finite else None,
                                            "non_finite_values": int(out.size - np.isfinite(out).sum())})
            if cuda:
                result["rows"][-1]["peak_device_mb"] = torch.cuda.max_memory_allocated() / 1e6
        except Exception as exc:  # a failing variant is recorded; the next one runs
            log.warning("%s failed: %s", name, exc)
            result["skipped"].append({"variant": name, "reason": f"failed: {first_line(exc)}"})
        finally:
            deblur.close()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        write(result)
    return result


def markdown(result: dict) -> str:
    """The tables: latency per variant and size with the floor, then drift."""
    env = result["environment"]
    lines = [f"# Runtime PyTorch path on {env['device']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, driver {env.get('driver')}; "
             f"{env['date']}; weights {Path(result['weights']).name} ({result['config']}); batch 1, "
             f"{result['warmup']} warm-up calls, up to {result['repeats']} timed (CUDA events, a synchronisation "
             "per call). run: backend on an NCHW float32 host array; deblur: Deblurrer.deblur on a uint8 image "
             "(no tiles); replay: the CUDA graph alone (device time). Floors are estimates at peak throughput.", "",
             "| variant | size | run p50 | run p95 | run p99 | deblur p50 | replay p50 | first call | "
             "vs eager FP32 trained (run) | H200 floor (FP16 / FP32, est.) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["size"]: r["run_p50_ms"] for r in result["rows"] if r["variant"] == VARIANTS[0][0]}
    for r in result["rows"]:
        floor = result["floor_ms_estimate"].get(r["size"], {}).get("H200", {})
        ratio = f"{base[r['size']] / r['run_p50_ms']:.2f}x" if r["size"] in base else "-"
        replay = f"{r['replay_p50_ms']:.2f}" if "replay_p50_ms" in r else "-"
        lines.append(f"| {r['variant']} | {r['size']} | {r['run_p50_ms']:.2f} | {r['run_p95_ms']:.2f} | "
                     f"{r['run_p99_ms']:.2f} | {r['deblur_p50_ms']:.2f} | {replay} | {r['first_call_ms']:.0f} | "
                     f"{ratio} | {floor.get('fp16', 0):.3f} / {floor.get('fp32', 0):.3f} |")
    lines += ["", "All times in ms. Targets (issue #30, FP16 batch 1): "
              + ", ".join(f"{size} <= {ms:g} ms" for size, ms in result["targets_ms"].items())
              + f"; output >= {DRIFT_TARGET_DB:g} dB vs FP32. Variants not named trained run the attention folded.", "",
              "| variant | size | PSNR vs eager FP32 trained (dB) |",
              "|---|---|---|"]
    lines += [f"| {d['variant']} | {d['size']} | " + (f"{d['psnr_db_vs_eager_fp32']:.1f} |"
              if d["psnr_db_vs_eager_fp32"] is not None else f"{d['non_finite_values']} non-finite values |")
              for d in result["drift"]]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{s['variant']}: {s['reason']}" for s in result["skipped"])]
    return "\n".join(lines) + "\n"


#: This command's own folder: a rerun refreshes its files there (as calibration.drift's out/drift); a folder you
#: name keeps the results already in it unless --force.
DEFAULT_OUTPUT = Path("out") / "gpu_checks" / "roofline"


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number, path_arg
    from benchmarks.cli import size_type

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_roofline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None, help="checkpoint (default: the default model's)")
    parser.add_argument("--sizes", type=size_type(), nargs="+", default=[(256, 256), (720, 1280), (1080, 1920)],
                        metavar="HxW", help="input sizes, batch 1 (default 256x256 720x1280 1080x1920)")
    parser.add_argument("--repeats", type=number(int, 3), default=50,
                        help="timed calls per variant and size, at least 3 (default 50)")
    parser.add_argument("--warmup", type=number(int, 0), default=5, help="untimed calls first (default 5)")
    parser.add_argument("--variants", nargs="+", default=None, choices=[v[0] for v in VARIANTS], metavar="NAME",
                        help="only these variants (default all: " + ", ".join(v[0] for v in VARIANTS) + ")")
    parser.add_argument("--output", type=path_arg, default=None,
                        help=f"folder for roofline_<GPU>_<date>.json and .md (created; default {DEFAULT_OUTPUT}, "
                             "whose files each run refreshes; in a folder you name, existing ones only with --force)")
    parser.add_argument("--force", action="store_true",
                        help="replace the results of the same GPU and date in the --output folder you named")
    parser.add_argument("--cpu-ok", action="store_true",
                        help="run without a GPU (a smoke test of the code paths; the numbers mean nothing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cli import run_main

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    if not torch.cuda.is_available() and not args.cpu_ok:
        print("no CUDA GPU visible to PyTorch; this measures the GPU path (--cpu-ok runs a smoke test on the CPU)")
        return 2
    replace = args.force or args.output is None  # its own folder is refreshed; one you name keeps its files
    args.output = DEFAULT_OUTPUT if args.output is None else args.output
    return run_main(lambda: _main(args, replace), f"the variants finished are in {args.output}")


def _main(args: argparse.Namespace, replace: bool) -> int:
    import torch

    from banet.checkpoint import load_checkpoint
    from banet.defaults import default_weights_path
    from banet.machine import cpu_name, results_stem
    from benchmarks.cli import check_results, write_files

    weights = args.weights or default_weights_path()
    load_checkpoint(weights)  # a missing or unreadable checkpoint: one line, before any file is written
    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
    name = results_stem("roofline", machine)
    check_results(args.output, [f"{name}.json", f"{name}.md"], replace,
                  inputs={"the checkpoint (--weights)": weights})
    stem = args.output / name

    def write(result: dict) -> None:  # each file whole or not at all: a run stopped by a time limit leaves both
        write_files({Path(f"{stem}.json"): json.dumps(result, indent=2).encode(),
                     Path(f"{stem}.md"): markdown(result).encode()})

    result = measure(weights, args.sizes, args.repeats, args.warmup, args.cpu_ok, args.variants, write)
    print(markdown(result))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
