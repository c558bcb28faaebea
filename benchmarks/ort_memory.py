"""ONNX Runtime's CPU memory options side by side: speed, peak memory and page faults of each, one fresh process per
case, so the choice in :func:`banet.onnxruntime_options.session_options` can be re-measured on any machine.

    python -m benchmarks.ort_memory                       # shipped FP32 + INT8 files, 720x1280, 2 threads
    python -m benchmarks.ort_memory --per-shape 774x694 774x640 700x694 700x640   # + a 12 MP photo's tile shapes

The options compared: ``arena off`` (the CPU arena off, ONNX Runtime's memory pattern on: this project's setting
until 2026-12-06), ``arena on`` (ONNX Runtime's defaults), ``arena, no pattern`` (the session's own arena, the memory
pattern off) and ``shared arena, no pattern`` (one arena for the process's sessions: what the runtime uses now).
Each case opens its session(s), calls each once to warm up, then times ``--runs`` rounds of calls: p50, peak
resident set size (``ru_maxrss``), what the process still holds after the calls, and minor page faults per call
(memory the kernel had to hand out afresh). Results:
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
from benchmarks.cli import (
    BenchmarkError,
    add_force,
    add_output,
    add_threads,
    check_repeated,
    check_results,
    run_main,
    size_type,
    write_files,
)
from benchmarks.timing import rss_bytes

#: name -> (CPU arena on, memory pattern on); None: session_options' own choice (the process's shared arena, no
#: memory pattern).
MODES = {"arena off": (False, True), "arena on": (True, True), "arena, no pattern": (True, False),
         "shared arena, no pattern": None}

log = logging.getLogger(__name__)


def _options(ort, mode: str, threads: int):
    from banet.onnxruntime_options import session_options

    if MODES[mode] is None:
        return session_options(ort, threads)
    options = session_options(ort, threads, on_cpu=False)  # ONNX Runtime's defaults, then this mode's two
    options.enable_cpu_mem_arena, options.enable_mem_pattern = MODES[mode]
    return options


def measure(mode: str, path: str, sizes: list[tuple[int, int]], per_shape: bool, threads: int, runs: int) -> dict:
    """One case in this process: one dynamic session run at each of ``sizes`` in turn, or (``per_shape``) one
    session per size with its dimensions fixed (what ``OnnxRuntimeBackend(static=True)`` opens for a photo's tile
    shapes); ``mode`` names the memory options. The p50 is over every timed call."""
    from runtime.backends.onnxruntime_backend import FREE_DIMS, import_onnxruntime

    ort = import_onnxruntime()
    rng = np.random.default_rng(0)
    cases = []
    for height, width in sizes if per_shape else sizes[:1]:
        options = _options(ort, mode, threads)
        if per_shape:
            for dim, value in zip(FREE_DIMS, (1, 3, height, width)):
                if dim:
                    options.add_free_dimension_override_by_name(dim, value)
        cases.append(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
    calls = [(cases[i if per_shape else 0], {cases[0].get_inputs()[0].name: rng.random((1, 3, h, w), np.float32)})
             for i, (h, w) in enumerate(sizes)]
    for session, feed in calls:
        session.run(None, feed)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(runs):
        for session, feed in calls:
            started = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - started) * 1000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"mode": mode, "file": Path(path).name, "size": " ".join(hw_text(h, w) for h, w in sizes),
            "sessions": len(cases), "threads": threads, "runs": runs, "p50_ms": round(statistics.median(times), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_after_mb": round(rss_bytes() / 2**20), "page_faults_per_call": round(faults / len(times))}


def _child(mode: str, path: Path, sizes: str, per_shape: bool, threads: int, runs: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.ort_memory", "--child", mode, str(path), sizes, str(int(per_shape)),
           str(threads), str(runs)]
    log.info("%s, %s, %s", mode, path.name, sizes)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"mode": mode, "file": path.name, "size": sizes, "failed": f"exit {done.returncode}: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    """The markdown table, each case's time also as a ratio to ``arena off`` on the same file and sizes."""
    def key(r: dict) -> tuple:
        return r["file"], r["size"], r.get("sessions", 1)

    base = {key(r): r for r in rows if r["mode"] == "arena off" and "failed" not in r}
    lines = ["| file | size (sessions) | options | p50 ms | speed-up vs arena off | peak RSS MB | held after MB | "
             "page faults per call |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = r["size"] + (f" ({r['sessions']}, one per shape)" if r.get("sessions", 1) > 1 else "")
        if "failed" in r:
            lines.append(f"| `{r['file']}` | {size} | {r['mode']} | {r['failed']} | | | | |")
            continue
        ref = base.get(key(r))
        ratio = f"{ref['p50_ms'] / r['p50_ms']:.2f}x" if ref else ""
        lines.append(f"| `{r['file']}` | {size} | {r['mode']} | {r['p50_ms']:,.1f} | {ratio} | "
                     f"{r['peak_rss_mb']:,} | {r['rss_after_mb']:,} | {r['page_faults_per_call']:,} |")
    return lines


def write_results(rows: list[dict], output: Path, stem: str) -> Path:
    data = (json.dumps({"cpu": cpu_name(), "cases": rows}, indent=2) + "\n").encode()
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    lines = [f"# ONNX Runtime CPU memory options ({cpu_name()}, {', '.join(map(str, threads))} threads)", "",
             "Each case in a fresh process: one warm-up call per size, then the timed calls (p50 over all of them). "
             "`shared arena, no pattern` is what `banet.onnxruntime_options.session_options` sets.", "",
             *table(rows)]
    stem_path = output / stem
    markdown = ("\n".join(lines) + "\n").encode()
    write_files({stem_path.with_suffix(".json"): data, stem_path.with_suffix(".md"): markdown})
    return stem_path.with_suffix(".md")


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number, path_arg

    parser = argparse.ArgumentParser(prog="python -m benchmarks.ort_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=path_arg,
                        help="network ONNX files to run (default: the default model's shipped FP32 ONNX and INT8 ort "
                             "file)")
    parser.add_argument("--sizes", nargs="+", type=size_type(), default=[(720, 1280)], metavar="HxW",
                        help="input sizes, HxW (default 720x1280)")
    add_threads(parser)
    parser.add_argument("--runs", type=number(int, 1, 1000), default=5,
                        help="timed calls per case after one warm-up call (default %(default)s)")
    add_output(parser, "ort_memory")
    add_force(parser)
    parser.add_argument("--per-shape", nargs="+", type=size_type(), default=[], metavar="HxW",
                        help="also one case per file with a fixed-shape session for each of these sizes, called in "
                             "turn (as static=True runs a photo's tile shapes): what the sessions hold together")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        mode, path, sizes, per_shape, threads, runs = args.child
        print(json.dumps(measure(mode, path, [parse_hw(s) for s in sizes.split()], per_shape == "1", int(threads),
                                 int(runs))))
        return 0
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args: argparse.Namespace) -> int:
    check_repeated({"--sizes": args.sizes, "--per-shape": args.per_shape, "files": args.files})
    stem = results_stem("ort_memory")
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force,
                  inputs={f"ONNX file {path}": path for path in args.files})
    from benchmarks.profile import check_files, default_files

    files = list(args.files)
    check_files(files)
    files = files or default_files()
    cases = [(hw_text(h, w), False) for h, w in args.sizes]
    if args.per_shape:
        cases.append((" ".join(hw_text(h, w) for h, w in args.per_shape), True))
    rows = [_child(mode, Path(f), sizes, per_shape, args.threads, args.runs)
            for f in files for sizes, per_shape in cases for mode in MODES]
    if all("failed" in row for row in rows):
        raise BenchmarkError(f"every case failed, no results written; the first: {rows[0]['failed']}")
    report = write_results(rows, args.output, stem)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
