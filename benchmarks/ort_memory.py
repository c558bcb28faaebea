"""ONNX Runtime's CPU memory options side by side: speed, peak memory and page faults of each, one fresh process per
case, so the choice in :func:`banet.onnxruntime_options.session_options` can be re-measured on any machine.

    python -m benchmarks.ort_memory                       # shipped FP32 + INT8 files, 720x1280, 2 threads
    python -m benchmarks.ort_memory --sizes 256x256 1080x1920 --runs 3

The options compared: ``arena off`` (the CPU arena off, ONNX Runtime's memory pattern on: this project's setting
until 2026-12-06), ``arena on`` (ONNX Runtime's defaults) and ``arena, no pattern`` (the arena on, the memory
pattern off: what the runtime uses now). Each case opens the session, runs once to warm up, then times ``--runs``
calls: p50, peak resident set size (``ru_maxrss``), what the process still holds after the calls, and minor page
faults per call (memory the kernel had to hand out afresh). Results:
``benchmarks/results/ort_memory_<cpu>_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from banet.machine import cpu_name, results_stem
from banet.shapes import hw_text, parse_hw
from benchmarks.cli import BenchmarkError, add_force, check_results, run_main, size_type, write_files

RESULTS = Path("benchmarks") / "results"

#: name -> (CPU arena on, memory pattern on); the last is session_options' own choice.
MODES = {"arena off": (False, True), "arena on": (True, True), "arena, no pattern": (True, False)}

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(mode: str, path: str, height: int, width: int, threads: int, runs: int) -> dict:
    """One case in this process: the session made by ``session_options`` with ``mode``'s arena/pattern settings."""
    from banet.onnxruntime_options import session_options
    from runtime.backends.onnxruntime_backend import import_onnxruntime

    ort = import_onnxruntime()
    arena, pattern = MODES[mode]
    options = session_options(ort, threads)
    options.enable_cpu_mem_arena, options.enable_mem_pattern = arena, pattern
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)}
    session.run(None, feed)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"mode": mode, "file": Path(path).name, "size": hw_text(height, width), "threads": threads, "runs": runs,
            "p50_ms": round(statistics.median(times), 1), "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024), "rss_after_mb": round(_rss_mb()),
            "page_faults_per_call": round(faults / runs)}


def _child(mode: str, path: Path, size: str, threads: int, runs: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.ort_memory", "--child", mode, str(path), size, str(threads), str(runs)]
    log.info("%s, %s, %s", mode, path.name, size)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"mode": mode, "file": path.name, "size": size, "failed": f"exit {done.returncode}: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    """The markdown table, each case's time and peak also as a ratio to ``arena off`` on the same file and size."""
    base = {(r["file"], r["size"]): r for r in rows if r["mode"] == "arena off" and "failed" not in r}
    lines = ["| file | size | options | p50 ms | speed-up vs arena off | peak RSS MB | held after MB | "
             "page faults per call |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| `{r['file']}` | {r['size']} | {r['mode']} | {r['failed']} | | | | |")
            continue
        ref = base.get((r["file"], r["size"]))
        ratio = f"{ref['p50_ms'] / r['p50_ms']:.2f}x" if ref else ""
        lines.append(f"| `{r['file']}` | {r['size']} | {r['mode']} | {r['p50_ms']:,.1f} | {ratio} | "
                     f"{r['peak_rss_mb']:,} | {r['rss_after_mb']:,} | {r['page_faults_per_call']:,} |")
    return lines


def write_results(rows: list[dict], output: Path, stem: str) -> Path:
    data = (json.dumps({"cpu": cpu_name(), "cases": rows}, indent=2) + "\n").encode()
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    lines = [f"# ONNX Runtime CPU memory options ({cpu_name()}, {', '.join(map(str, threads))} threads)", "",
             "Each case in a fresh process: one warm-up call, then the timed calls. `arena, no pattern` is what "
             "`banet.onnxruntime_options.session_options` sets.", "", *table(rows)]
    stem_path = output / stem
    markdown = ("\n".join(lines) + "\n").encode()
    write_files({stem_path.with_suffix(".json"): data, stem_path.with_suffix(".md"): markdown})
    return stem_path.with_suffix(".md")


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number, threads
    from banet.machine import usable_cpus

    parser = argparse.ArgumentParser(prog="python -m benchmarks.ort_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path,
                        help="network ONNX files to run (default: the default model's shipped FP32 ONNX and INT8 ort "
                             "file)")
    parser.add_argument("--sizes", nargs="+", type=size_type(), default=[(720, 1280)], metavar="HxW",
                        help="input sizes, HxW (default 720x1280)")
    parser.add_argument("--threads", type=threads(1), default=min(2, usable_cpus()), metavar="N",
                        help="intra-op threads (default 2, or 1 on a one-CPU machine)")
    parser.add_argument("--runs", type=number(int, 1, 1000), default=5,
                        help="timed calls per case after one warm-up call (default %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="results folder (default benchmarks/results); files are named ort_memory_<cpu>_<date>")
    add_force(parser)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        mode, path, size, threads, runs = args.child
        height, width = parse_hw(size)
        print(json.dumps(measure(mode, path, height, width, int(threads), int(runs))))
        return 0
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args: argparse.Namespace) -> int:
    stem = results_stem("ort_memory")
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force,
                  inputs={f"ONNX file {path}": path for path in args.files})
    from benchmarks.profile import check_files, default_files

    files = list(args.files)
    check_files(files)
    files = files or default_files()
    rows = [_child(mode, Path(f), hw_text(h, w), args.threads, args.runs)
            for f in files for h, w in args.sizes for mode in MODES]
    if all("failed" in row for row in rows):
        raise BenchmarkError(f"every case failed, no results written; the first: {rows[0]['failed']}")
    report = write_results(rows, args.output, stem)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
