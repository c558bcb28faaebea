"""A whole phone photo through the command line users run: wall time and peak memory per backend and precision.

    python -m benchmarks.run --e2e 3000x4000          # adds these rows to the benchmark's results

Each case is ``python -m runtime PHOTO --backend B --precision P [--threads T]`` in a fresh process with an empty
cache folder (model load and compile, decode, tiling, inference, encode: what a user waits for the first time),
its peak resident set size read from the kernel's high-water mark of that program (``VmHWM``, sampled every 50 ms
until it exits). The photo is scikit-image's astronaut resized to the size (a real photograph at phone-camera
resolution), written once as PNG.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: (backend, precision[, environment]) cases; torch runs the checkpoint, the others the shipped ONNX files of the
#: default model; bf16 rows fail in one line on CPUs without bfloat16 units. The last is a peer: the INT8 case with
#: NumPy's transparent-huge-page advice left on, as before the runtime turned it off (runtime.host_memory),
#: measured in the same run.
CASES = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("openvino", "int8"), ("openvino", "int8", {"NUMPY_MADVISE_HUGEPAGE": "1"}))
#: ``--app``: the app graphs of the default model (export/to_app.py) run as an app runs them
#: (:mod:`benchmarks.app_run`), next to the runtime on the same engine, ONNX Runtime.
APP_CASES = (("onnxruntime", "fp32"), ("app", "fp32"), ("onnxruntime", "int8"), ("app", "int8"))


def app_file(precision: str) -> Path:
    """The default model's app graph of ``precision`` (banet.artifacts.app_path of its network file)."""
    from banet.artifacts import app_path, int8_onnx_path, onnx_path
    from banet.defaults import default_weights_path

    network = onnx_path(default_weights_path().stem)
    return app_path(int8_onnx_path(network, "ort") if precision == "int8" else onnx_path(network.stem, precision))


def run_case(photo: Path, backend: str, precision: str, threads: int | None, folder: Path,
             timeout_s: float = 1800.0, env: dict[str, str] | None = None) -> dict:
    """One ``python -m runtime`` run (with ``env`` added to the environment): exit code, wall seconds and the
    child's peak RSS in MB."""
    env = env or {}
    if backend == "app":  # the app graph as an app runs it: ONNX Runtime alone (benchmarks.app_run)
        cmd = [sys.executable, "-m", "benchmarks.app_run", str(app_file(precision)), str(photo),
               str(folder / f"app_{precision}.png")]
    else:
        cmd = [sys.executable, "-m", "runtime", str(photo), "--output", str(folder / f"{backend}_{precision}"),
               "--backend", backend, "--precision", precision, "--force", "-q"]
    if threads:
        cmd += ["--threads", str(threads)]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        # a cache of its own, empty: every case is a first run (nothing compiled by an earlier case read back)
        cache = {"BANET_CACHE": tempfile.mkdtemp(prefix=f"cache_{backend}_{precision}_", dir=folder)}
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors, text=True,
                                 env={**os.environ, **cache, **env})
        peak_kb = 0
        try:
            while child.poll() is None:
                peak_kb = max(peak_kb, _high_water_kb(child.pid))
                if time.perf_counter() - started > timeout_s:
                    child.kill()  # a hung case is killed and reported, never waited on forever
                time.sleep(0.05)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        seconds = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read()
    shown = " ".join([*(f"{k}={v}" for k, v in env.items()), "python", *cmd[1:]]).replace(
        str(photo), photo.name).replace(str(folder), "OUT").replace(str(Path.cwd()) + os.sep, "")
    row = {"command": shown, "backend": backend,
           "precision": precision, "threads": threads, "exit": child.returncode, "wall_s": round(seconds, 1),
           "peak_rss_mb": round(peak_kb / 1024)}
    if child.returncode != 0:
        row["error"] = (stderr.strip().splitlines() or [f"(no output; exit {child.returncode})"])[-1]
    log.info("e2e %s%s %s: %.1f s, %d MB%s", " ".join(f"{k}={v}" for k, v in env.items()) + " " if env else "",
             backend, precision, seconds, row["peak_rss_mb"],
             f" (failed: {row['error']})" if "error" in row else "")
    return row


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM, kB), 0 once it is gone. Why not ``wait4``'s ru_maxrss:
    a child forked from this process inherits this process's own peak (the benchmark's, several GB) as its
    starting maximum; VmHWM belongs to the memory of the program the child runs, from its exec on."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def end_to_end(height: int, width: int, threads: int | None = None, cases=CASES) -> list[dict]:
    """Every case on one photo of ``height`` x ``width``; a backend that is not installed fails its row in one
    line (the CLI's own error), which is kept as the reason."""
    import cv2

    from benchmarks.memory import photo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"photo_{height}x{width}.png"
        cv2.imwrite(str(path), photo(width, height))
        rows = [run_case(path, case[0], case[1], threads, folder, env=case[2] if len(case) > 2 else None)
                for case in cases]
    for row in rows:
        row["size"] = f"{height}x{width}"
    return rows


def table(rows: list[dict]) -> list[str]:
    """The rows as a markdown table (the benchmark's results and this module's own file)."""
    lines = ["| command | size | wall s | peak RSS MB | result |", "|---|---|---:|---:|---|"]
    return lines + [f"| `{r['command']}` | {r['size']} | {r['wall_s']:,.1f} | {r['peak_rss_mb']:,} "
                    f"| {r.get('error') or 'ok'} |" for r in rows]


def build_parser():
    import argparse

    from banet.cli_types import threads
    from benchmarks.cli import add_force, add_output, size_type

    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", type=size_type(), help="photo size HxW, e.g. 3000x4000 (12 MP; at most 200 MP)")
    parser.add_argument("--threads", type=threads(0), default=None, metavar="N",
                        help="--threads for each command (default and 0: all cores)")
    add_output(parser, "e2e")
    parser.add_argument("--app", action="store_true",
                        help="instead: the default model's app graphs (python export/to_app.py, --precision int8) "
                             "run as an app runs them, next to python -m runtime on ONNX Runtime; results "
                             "e2e_app_<cpu>_<date>")
    add_force(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.end_to_end 3000x4000``: the rows alone, into benchmarks/results/e2e_<cpu>_<date>."""
    from benchmarks.cli import run_main

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args) -> int:
    import json

    from banet.machine import cpu_name, results_stem
    from benchmarks.cli import BenchmarkError, check_results, write_files

    stem = results_stem("e2e_app" if args.app else "e2e")  # named (today's date), checked before the photos run
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force)
    if args.app:
        missing = [str(app_file(p)) for p in ("fp32", "int8") if not app_file(p).is_file()]
        if missing:
            raise BenchmarkError(f"no app graph {', '.join(missing)}: make them with python export/to_app.py "
                                 "and python export/to_app.py --precision int8")
    rows = end_to_end(*args.size, threads=args.threads, cases=APP_CASES if args.app else CASES)
    if all("error" in row for row in rows):  # nothing measured: no results file to keep
        raise BenchmarkError(f"every case failed, no results written; the first: {rows[0]['error']}")
    what = "an app graph and python -m runtime" if args.app else "python -m runtime"
    lines = [f"# A whole photo through {what} ({cpu_name()}, {os.cpu_count()} cores)", "", *table(rows)]
    path = args.output / stem
    write_files({Path(f"{path}.json"): (json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2) + "\n").encode(),
                 Path(f"{path}.md"): ("\n".join(lines) + "\n").encode()})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
