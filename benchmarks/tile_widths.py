"""Does a tile's width change an engine's speed per pixel? Each CPU path at tile shapes of nearly the same area,
one width a multiple of 16 and one not, timed interleaved: the measurement behind
:data:`runtime.tiling.WIDTH_MULTIPLE`.

    python -m benchmarks.tile_widths                                  # a 12 MP and a 6 MP photo's tiles, 2 threads
    python -m benchmarks.tile_widths --shapes 774x694 774x704 --threads 1

The default shapes are the tiles the runtime's default memory budget gave a 3000x4000 and a 2000x3000 photo before
widths were aligned (774x694, 688x774) and after (774x704, 688x784). Each path is what ``Deblurrer(backend=...,
precision=...)`` opens for the default model, compiled for every shape before timing. The table gives each shape's
p50, its time per megapixel and that as a ratio to the first shape's. Results:
``benchmarks/results/tile_widths_<cpu>_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging

from banet.machine import cpu_name, results_stem
from banet.shapes import hw_text
from benchmarks.cli import (
    add_force,
    add_output,
    add_threads,
    check_repeated,
    check_results,
    run_main,
    size_type,
    write_files,
)
from runtime.tiling import WIDTH_MULTIPLE

#: (backend, precision) of each path timed: what ``Deblurrer`` runs on a CPU for each choice.
PATHS = (("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"), ("onnxruntime", "fp32"),
         ("onnxruntime", "int8"))

log = logging.getLogger(__name__)


def measure(backend: str, precision: str, shapes: list[tuple[int, int]], threads: int, repeats: int) -> dict:
    """One path: p50 ms per shape, timed in rounds (one call of each shape per round) after a warm-up call each."""
    from banet.processing import preprocess
    from benchmarks.memory import photo
    from benchmarks.timing import time_interleaved
    from runtime import Deblurrer
    from runtime.backends.base import BackendUnavailableError

    try:
        deblurrer = Deblurrer(backend=backend, precision=precision, threads=threads)
    except BackendUnavailableError as exc:  # no bfloat16 units here, or no OpenVINO
        return {"backend": backend, "precision": precision, "skipped": str(exc)}
    with deblurrer:
        run, calls = deblurrer.backend.run, {}
        for height, width in shapes:
            batch, _ = preprocess(photo(width, height)[None], pad=False)  # the runtime's own pre-processing
            run(batch)  # compile (OpenVINO: per shape) and warm up
            calls[hw_text(height, width)] = (lambda b=batch: run(b), False)
        timings = time_interleaved(calls, repeats)
        described = deblurrer.backend.describe()
    p50 = {shape: round(timing.p50, 1) for shape, timing in timings.items()}
    return {"backend": backend, "precision": precision, "runs": described, "threads": threads, "p50_ms": p50,
            "ms_per_mp": {shape: round(ms / (h * w / 1e6), 1) for (h, w), (shape, ms) in zip(shapes, p50.items())}}


def table(rows: list[dict]) -> list[str]:
    lines = ["| path | runs as | shape | p50 ms | ms per MP | vs first shape (per MP) |",
             "|---|---|---|---:|---:|---:|"]
    for row in rows:
        name = f"{row['backend']} {row['precision']}"
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
            continue
        first = None
        for shape, ms in row["p50_ms"].items():
            per_mp = row["ms_per_mp"][shape]
            first = first or per_mp
            lines.append(f"| {name} | {row['runs']} | {shape} | {ms:,.1f} | {per_mp:,.1f} | {first / per_mp:.2f}x |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tile_widths", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=size_type(even=True), metavar="HxW",
                        default=[(774, 694), (774, 704), (688, 774), (688, 784)],
                        help="tile shapes, HxW, each side even (default: 774x694 774x704 688x774 688x784)")
    add_threads(parser)
    parser.add_argument("--repeats", type=number(int, 1, 1000), default=5,
                        help="timed rounds (default %(default)s)")
    add_output(parser, "tile_widths")
    add_force(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def body() -> int:
        check_repeated({"--shapes": args.shapes})
        stem = results_stem("tile_widths")
        check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force)
        rows = []
        for backend, precision in PATHS:
            log.info("%s %s", backend, precision)
            rows.append(measure(backend, precision, args.shapes, args.threads, args.repeats))
        lines = [f"# Speed per pixel by tile width ({cpu_name()}, {args.threads} threads)", "",
                 "Each path's shapes timed interleaved, after a warm-up call each; `python -m benchmarks.tile_widths`.",
                 "", *table(rows)]
        print("\n".join(lines))
        data = (json.dumps({"cpu": cpu_name(), "shapes": [hw_text(*s) for s in args.shapes],
                            "widths": [w for _, w in args.shapes], "runtime_width_multiple": WIDTH_MULTIPLE,
                            "rows": rows}, indent=2) + "\n").encode()
        markdown = ("\n".join(lines) + "\n").encode()
        write_files({args.output / f"{stem}.json": data, args.output / f"{stem}.md": markdown})
        print(f"wrote {args.output / stem}.json and .md")
        return 0

    return run_main(body, "no results written")


if __name__ == "__main__":
    raise SystemExit(main())
