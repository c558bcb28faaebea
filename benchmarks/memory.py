"""Peak memory of whole photos through ``Deblurrer`` with default settings, and what automatic tiling costs.

    python -m benchmarks.memory                                   # 12 MP and 48 MP on ONNX Runtime and PyTorch
    python -m benchmarks.memory --sizes 3000x4000 --backends onnxruntime --agreement 2000x3000

Each case runs in a fresh process (so its peak resident set size, ``ru_maxrss``, is its own): the embedded default
model, the default memory budget, a real photograph (scikit-image's ``astronaut``) resized to the size. The
agreement check runs one photo untiled (no budget) and with the default budget and reports the PSNR between the
two outputs. Results: ``benchmarks/results/memory_<cpu>_<date>.json`` and ``.md``. Memory is measured here, in a
benchmark, never asserted in a timed test.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
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
    check_repeated,
    check_results,
    run_main,
    size_type,
    write_files,
)

#: Where results go (benchmarks.run's folder; not imported from there, which would load torch in every case).
#: Results go under the current project (where the command is run), never into an installed package.

log = logging.getLogger(__name__)


def photo(width: int, height: int) -> np.ndarray:
    """scikit-image's astronaut (BGR uint8) resized to width x height: a real photo at phone-camera size."""
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut()[..., ::-1], (width, height), interpolation=cv2.INTER_CUBIC)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(backend: str, width: int, height: int) -> dict:
    """One case, in this process: peak RSS and seconds for one photo through a default ``Deblurrer``."""
    from runtime import Deblurrer
    from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB

    image = photo(width, height)
    with Deblurrer(backend=backend) as deblur:
        deblur(image[:64, :64])  # warm-up: load and first run
        before = _peak_mb()
        started = time.perf_counter()
        out = deblur(image)
        seconds = time.perf_counter() - started
        tile = deblur._tile_size(height, width)
        count, computed = tile_work(height, width, tile, deblur.tile_overlap)
    assert out.shape == image.shape
    return {"backend": backend, "size": hw_text(height, width), "megapixels": round(width * height / 1e6, 1),
            "tile": list(tile) if tile else None, "tiles": count, "computed_x": computed,
            "peak_rss_mb": round(_peak_mb()), "rss_before_mb": round(before),
            "seconds": round(seconds, 1), "budget_mb": DEFAULT_MEMORY_BUDGET_MB}


def tile_work(height: int, width: int, tile: tuple[int, int] | None, overlap: int) -> tuple[int, float]:
    """How many tiles a photo runs in and how many times its pixel count they compute (overlaps counted twice)."""
    from runtime.tiling import tile_starts

    if tile is None:
        return 1, 1.0
    count = len(tile_starts(height, tile[0], overlap)) * len(tile_starts(width, tile[1], overlap))
    return count, round(count * tile[0] * tile[1] / (height * width), 3)


def agreement(backend: str, width: int, height: int) -> dict:
    """PSNR between the default (auto-tiled) and the untiled output of one real photo."""
    from runtime import Deblurrer

    image = photo(width, height)
    with Deblurrer(backend=backend) as tiled:
        tile = tiled._tile_size(height, width)
        a = tiled(image).astype(np.float64)
    with Deblurrer(backend=backend, memory_budget_mb=None) as untiled:
        b = untiled(image).astype(np.float64)
    from export.parity import psnr

    return {"backend": backend, "size": hw_text(height, width), "tile": list(tile) if tile else None,
            "psnr_tiled_vs_untiled_db": round(psnr(a / 255.0, b / 255.0), 2),
            "max_abs_diff": int(np.abs(a - b).max())}


def _child(kind: str, backend: str, size: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", kind, backend, size]
    log.info("running %s", " ".join(cmd[2:]))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"backend": backend, "size": size, "failed": f"exit {done.returncode}: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(rows: list[dict], agreements: list[dict], output: Path, stem: str | None = None) -> Path:
    """``output/<stem>.json`` and ``.md`` (default stem ``memory_<cpu>_<date>``), each whole or not at all."""
    stem = output / (stem or results_stem("memory"))
    data = (json.dumps({"cpu": cpu_name(), "cases": rows, "agreement": agreements}, indent=2) + "\n").encode()
    lines = [f"# Peak memory, default settings ({cpu_name()})", "",
             "| backend | size | MP | tile | tiles (pixels computed) | peak RSS | seconds |",
             "|---|---|---:|---|---|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['backend']} | {r['size']} | | | | {r['failed']} | |")
            continue
        tile = "x".join(map(str, r["tile"])) if r["tile"] else "untiled"
        lines.append(f"| {r['backend']} | {r['size']} | {r['megapixels']} | {tile} | {r['tiles']} "
                     f"({r['computed_x']}x) | {r['peak_rss_mb']} MB | {r['seconds']} |")
    if agreements:
        lines += ["", "| backend | size | tile | tiled vs untiled | max abs diff (8-bit) |", "|---|---|---|---:|---:|"]
        for a in agreements:
            tile = "x".join(map(str, a["tile"])) if a.get("tile") else "untiled"
            value = a.get("failed") or f"{a['psnr_tiled_vs_untiled_db']} dB"
            lines.append(f"| {a['backend']} | {a['size']} | {tile} | {value} | {a.get('max_abs_diff', '')} |")
    write_files({stem.with_suffix(".json"): data, stem.with_suffix(".md"): ("\n".join(lines) + "\n").encode()})
    return stem.with_suffix(".md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=size_type(), default=[(3000, 4000), (6000, 8000)], metavar="HxW",
                        help="photo sizes, HxW, at most 200 MP each (default: 3000x4000 and 6000x8000, 12 MP and "
                             "48 MP)")
    parser.add_argument("--backends", nargs="+", choices=("onnxruntime", "openvino", "torch"),
                        default=["onnxruntime", "torch"],
                        help="Deblurrer backends to measure; the first also runs the agreement check")
    parser.add_argument("--agreement", type=size_type(), default=(2000, 3000), metavar="HxW",
                        help="HxW of the tiled-vs-untiled check (untiled needs about 1.3 KB per pixel)")
    parser.add_argument("--no-agreement", action="store_true", help="skip the tiled-vs-untiled check")
    add_output(parser, "memory")
    add_force(parser)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "BACKEND", "SIZE"), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        kind, backend, size = args.child
        height, width = parse_hw(size)
        print(json.dumps((measure if kind == "measure" else agreement)(backend, width, height)))
        return 0
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args: argparse.Namespace) -> int:
    check_repeated({"--sizes": args.sizes, "--backends": args.backends})
    stem = results_stem("memory")  # today's date: named and checked before the cases run
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force)
    rows = [_child("measure", b, hw_text(h, w)) for h, w in args.sizes for b in args.backends]
    h, w = args.agreement
    agreements = [] if args.no_agreement else [_child("agreement", b, hw_text(h, w)) for b in args.backends[:1]]
    if all("failed" in row for row in rows + agreements):  # nothing measured: no results file to keep
        raise BenchmarkError(f"every case failed, no results written; the first: {rows[0]['failed']}")
    report = write_results(rows, agreements, args.output, stem)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
