"""Batch throughput: the command line (one process) against ``python -m serving.batch`` (Ray Data) on the same photos.

    python -m benchmarks.batch_throughput --photos 50 --size 512x512

Makes ``--photos`` blurred crops of the held-out photographs (:mod:`calibration.photos`: scikit-image's bundled
photos, resized up where smaller than the crop; each crop's position, motion blur and sensor noise seeded by its
index) as PNG files in a temporary folder, then runs, each in a fresh process on the same files:

* ``python -m runtime PHOTOS --threads T`` (T: all cores), and once on one photo to measure its start-up;
* ``python -m serving.batch PHOTOS OUT --workers 1 --threads T``;
* ``python -m serving.batch PHOTOS OUT --workers T --threads 1``.

Reported per run: wall seconds including start-up (interpreter, model load, Ray), images/s over that wall time,
and images/s excluding start-up (the command line: the extra photos over the extra time against the one-photo
run; the batch jobs: from the first file a worker started to the last it finished, as their summary prints).
The outputs of the three runs are compared byte for byte. Results go to
benchmarks/results/batch_<cpu>_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: What serving.batch's summary says about the time its workers ran (see serving.batch.summary).
_STEADY = re.compile(r"([\d.]+) images/s while the workers ran \(([\d.]+) s\)")


def parse_size(text: str) -> tuple[int, int]:
    """argparse type: ``HxW`` in pixels (:func:`benchmarks.cli.size_type`), both at least 16."""
    from benchmarks.cli import size_type

    height, width = size_type()(text)  # its errors are argparse.ArgumentTypeError
    if min(height, width) < 16:
        raise argparse.ArgumentTypeError(f"each side must be at least 16 pixels, got {text!r}")
    return height, width


def make_photos(folder: Path, count: int, height: int, width: int, seed: int = 0) -> list[Path]:
    """``count`` blurred HxW crops of the held-out photos as PNG files in ``folder``: photo ``i % n`` at a
    seeded position, with a seeded camera-shake blur and sensor noise; identical on every run and machine."""
    import cv2

    from calibration.blur import degrade, random_motion_kernel
    from calibration.photos import HELDOUT_PHOTOS, load_heldout_photo, to_bgr_uint8
    from runtime.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        photo = load_heldout_photo(HELDOUT_PHOTOS[i % len(HELDOUT_PHOTOS)].name)
        scale = max(height / photo.shape[0], width / photo.shape[1])
        if scale > 1:  # smaller than the crop: resized up (a photo is still a photo, only softer)
            size = (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale)))
            photo = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC).clip(0, 1)
        kernel = random_motion_kernel(rng)
        pad = kernel.shape[0] // 2
        y = int(rng.integers(0, photo.shape[0] - height + 1))
        x = int(rng.integers(0, photo.shape[1] - width + 1))
        padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        blurred = degrade(padded[y:y + height + 2 * pad, x:x + width + 2 * pad], kernel, rng, crop=pad)
        path = folder / f"photo_{i:03d}.png"
        write_image(path, to_bgr_uint8(blurred))
        paths.append(path)
    return paths


def timed(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of ``command`` in a fresh process, and its result (stdout, stderr, exit code)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, done


def steady_rate(stdout: str) -> tuple[float | None, float | None]:
    """(images/s, seconds) while serving.batch's workers ran, from its summary; (None, None) if it has none."""
    match = _STEADY.search(stdout)
    return (float(match[1]), float(match[2])) if match else (None, None)


def compare_outputs(reference: Path, others: list[Path]) -> dict:
    """Byte-for-byte comparison of every file in ``reference`` with the same name in each of ``others``; for a
    differing image, the largest pixel difference."""
    from runtime.images import read_image

    differing, worst = [], 0
    names = sorted(p.name for p in reference.iterdir() if p.suffix == ".png")
    for other in others:
        extra = sorted(p.name for p in other.iterdir() if p.suffix == ".png" and not (reference / p.name).exists())
        differing += [f"{other.name}/{n} (not in {reference.name})" for n in extra]
        for name in names:
            mine, theirs = reference / name, other / name
            if not theirs.exists():
                differing.append(f"{other.name}/{name} (missing)")
            elif mine.read_bytes() != theirs.read_bytes():
                differing.append(f"{other.name}/{name}")
                diff = np.abs(read_image(mine).astype(np.int32) - read_image(theirs).astype(np.int32))
                worst = max(worst, int(diff.max()))
    return {"files": len(names), "identical": not differing, "differing": differing, "max_pixel_difference": worst}


def run(count: int, height: int, width: int, threads: int, model: Path | None, folder: Path) -> dict:
    """The three runs on ``count`` photos in ``folder``; the results as a dict (see the module docstring)."""
    root = Path(__file__).resolve().parent.parent
    photos = folder / "photos"
    paths = make_photos(photos, count, height, width)
    model_args = [] if model is None else ["--model", str(model)]
    py = sys.executable
    cases = [
        ("cli_one_photo", [py, "-m", "runtime", str(paths[0]), "-o", str(folder / "cli_one"), "--threads",
                           str(threads), "-q", *model_args]),
        ("cli", [py, "-m", "runtime", str(photos), "-o", str(folder / "cli"), "--threads", str(threads), "-q",
                 *model_args]),
        ("batch_1_worker", [py, "-m", "serving.batch", str(photos), str(folder / "batch_1_worker"), "--workers", "1",
                            "--threads", str(threads), "-q", *model_args]),
        (f"batch_{threads}_workers", [py, "-m", "serving.batch", str(photos), str(folder / f"batch_{threads}_workers"),
                                      "--workers", str(threads), "--threads", "1", "-q", *model_args]),
    ]
    runs = {}
    for name, command in cases:
        log.info("%s: %s", name, " ".join(command))
        wall, done = timed(command, root)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]  # its error line, or a traceback's end
            raise RuntimeError(f"{name} failed (exit {done.returncode}): {last}")
        images = 1 if name == "cli_one_photo" else count
        rate, span = steady_rate(done.stdout)
        runs[name] = {"command": " ".join(command).replace(str(folder), "TMP").replace(py, "python"),
                      "images": images, "wall_s": round(wall, 2), "images_per_s_wall": round(images / wall, 3),
                      "images_per_s_steady": rate, "workers_ran_s": span}
        log.info("%s: %.1f s wall, %.3f images/s", name, wall, images / wall)
    cli, one = runs["cli"], runs.pop("cli_one_photo")
    extra = cli["wall_s"] - one["wall_s"]
    cli["start_up_run_s"] = one["wall_s"]
    cli["images_per_s_steady"] = round((count - 1) / extra, 3) if count > 1 and extra > 0 else None
    for run_ in runs.values():
        for key in ("images_per_s_wall", "images_per_s_steady"):
            base = cli[key]
            run_[f"{key}_vs_cli"] = round(run_[key] / base, 3) if run_[key] and base else None
    outputs = compare_outputs(folder / "cli", [folder / name for name in runs if name != "cli"])
    return {"machine": _cpu(), "cores": os.cpu_count(), "date": datetime.date.today().isoformat(),
            "python": platform.python_version(), "photos": count, "size": f"{height}x{width}", "threads": threads,
            "model": str(model) if model else "default (Deblurrer())", "runs": runs, "outputs": outputs}


def _cpu() -> str:
    from banet.machine import cpu_name

    return cpu_name()


def markdown(result: dict) -> str:
    """The results as a markdown table (the file next to the JSON)."""
    lines = [f"# Batch throughput: {result['photos']} photos of {result['size']} ({result['machine']}, "
             f"{result['cores']} cores, {result['date']})", "",
             f"Model: {result['model']}. Wall: the whole command in a fresh process (start-up included). Steady: "
             "without start-up (the command line: the extra photos over the extra time against a one-photo run; "
             "batch: while its workers ran).", "",
             "| run | command | wall s | images/s (wall) | vs CLI | images/s (steady) | vs CLI |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, run_ in result["runs"].items():
        lines.append(f"| {name} | `{run_['command']}` | {run_['wall_s']:.1f} | {cell(run_['images_per_s_wall'])} | "
                     f"{cell(run_.get('images_per_s_wall_vs_cli'), '{:.2f}x')} | {cell(run_['images_per_s_steady'])} "
                     f"| {cell(run_.get('images_per_s_steady_vs_cli'), '{:.2f}x')} |")
    outputs = result["outputs"]
    lines += ["", f"Outputs: {outputs['files']} files per run, "
              + ("identical byte for byte across the runs." if outputs["identical"] else
                 f"{len(outputs['differing'])} differ (largest pixel difference {outputs['max_pixel_difference']}): "
                 + ", ".join(outputs["differing"][:10]))]
    return "\n".join(lines) + "\n"


def cell(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number, path_arg, threads
    from benchmarks.cli import add_force, add_output

    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=number(int, 2), default=50,
                        help="how many photos, at least 2 (default %(default)s)")
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="HxW",
                        help="photo size in pixels, each side at least 16 (default 512x512)")
    parser.add_argument("--threads", type=threads(1), default=os.cpu_count() or 1, metavar="N",
                        help="the command line's threads, the one batch worker's threads and the number of 1-thread "
                             "batch workers, at most the CPUs (default: all cores, %(default)s)")
    parser.add_argument("--model", type=path_arg, default=None,
                        help="model file (ONNX, engine or checkpoint; default: the embedded default model)")
    add_output(parser, "batch")
    add_force(parser)
    parser.add_argument("--keep", type=path_arg, default=None,
                        help="work in this folder and keep the photos and outputs (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cli import run_main

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args), f"no results written to {args.output}")


#: Copies of every photo the runs write: the photo, then the outputs of the command line and of two batch jobs.
_COPIES = 4


def _check_disk(folder: Path, count: int, height: int, width: int) -> None:
    """Refuse, before any photo is made, a run whose photos and outputs (PNG, at most 3 bytes a pixel each) would
    not fit the free space of ``folder`` (or of the nearest folder above it that exists)."""
    import shutil

    from benchmarks.cli import BenchmarkError

    need = _COPIES * count * height * width * 3
    where = Path(folder).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise BenchmarkError(f"{count} photos of {height}x{width} and their outputs need up to {need / 1e9:,.1f} GB; "
                             f"{where} has {free / 1e9:,.1f} GB free (fewer --photos, a smaller --size, or --keep "
                             "a folder on a larger disk)")


def _main(args: argparse.Namespace) -> int:
    from banet.machine import results_stem
    from banet.outputs import check_input
    from benchmarks.cli import BenchmarkError, check_results, write_files

    if args.model is not None:  # refused now, not after the photos are made and the first command fails
        check_input(args.model, error=BenchmarkError, what="model file")
    if args.keep is not None and args.keep.exists() and not args.keep.is_dir():
        raise BenchmarkError(f"--keep {args.keep} is a file; give a folder for the photos and outputs")
    _check_disk(args.keep if args.keep is not None else Path(tempfile.gettempdir()), args.photos, *args.size)
    stem = results_stem("batch", _cpu())  # today's date: named and checked before the runs
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force, inputs={"the model (--model)": args.model})
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            result = run(args.photos, *args.size, args.threads, args.model, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="banet-batch-bench-") as tmp:
                result = run(args.photos, *args.size, args.threads, args.model, Path(tmp))
    except (RuntimeError, OSError) as exc:
        raise BenchmarkError(str(exc)) from exc
    path = args.output / stem
    write_files({path.with_suffix(".json"): (json.dumps(result, indent=2) + "\n").encode(),
                 path.with_suffix(".md"): markdown(result).encode()})
    print(markdown(result))
    print(f"wrote {path}.json and .md")
    return 0 if result["outputs"]["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
