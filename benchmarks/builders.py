"""Engine builds through Polygraphy's loaders vs the direct TensorRT API builder they replaced: size and build time.

    python -m benchmarks.builders                      # FP16 sm75 and FP32 of the default model, 3 rounds
    python -m benchmarks.builders --rounds 5 --cases fp16_sm75

Issue 16 moved engine builds onto Polygraphy and asked for a measurement: if Polygraphy's build were worse on
something measurable here (build time, engine size), the old builder would stay for that case. The old builder is
read from git history (``export/trt/builder.py`` at commit 5b62023, the last before the move), so this needs the
repository's history and TensorRT for RTX. Both builders build the same plan in the same process, alternating
(direct, Polygraphy, direct, ...) so that machine load hits both alike; each row is one build. Results:
``benchmarks/results/builders_<cpu>_<date>.json`` and ``.md``. Timings are reported, never asserted in a test.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from banet.cli_types import number
from banet.errors import first_line
from banet.machine import cpu_name, results_stem
from benchmarks.cli import add_force, add_output, check_results, run_main, write_files

#: The last commit whose export/trt/builder.py built engines with the TensorRT API directly.
DIRECT_BUILDER_COMMIT = "5b62023"
CASES = {"fp16_sm75": {"precision": "fp16", "targets": ("sm75",)}, "fp32": {"precision": "fp32"}}

log = logging.getLogger(__name__)


def direct_builder(folder: Path):
    """The pre-Polygraphy builder module, loaded from git history."""
    from benchmarks.cli import BenchmarkError

    try:
        source = subprocess.run(["git", "show", f"{DIRECT_BUILDER_COMMIT}:export/trt/builder.py"], capture_output=True,
                                text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout  # any cwd
    except (OSError, subprocess.CalledProcessError) as exc:  # no git, or a copy without the repository's history
        detail = (getattr(exc, "stderr", None) or "").strip().splitlines()[-1:] or [first_line(exc)]
        raise BenchmarkError(f"cannot read the direct builder from git history ({DIRECT_BUILDER_COMMIT}): "
                             f"{detail[0]}; run this in a clone of the repository") from None
    path = folder / "direct_builder.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("direct_builder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being made
    spec.loader.exec_module(module)
    return module


def measure(rounds: int, cases: list[str]) -> list[dict]:
    """One row per build: case, builder, engine bytes, build seconds (the builder's own measure), layers."""
    from export.trt.engine_files import export_missing_onnx
    from export.trt.polygraphy_build import build_serialized as polygraphy_build
    from export.trt_build import BuildOptions, detect_runtime, make_plan

    runtime = detect_runtime("tensorrt-rtx")
    if runtime.module is None:
        raise SystemExit("TensorRT for RTX is not installed: pip install 'banet-deploy[rtx]'")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builders = {"direct TensorRT API": direct_builder(Path(tmp)).build_serialized,
                    "Polygraphy": polygraphy_build}
        for index in range(rounds):
            for case in cases:
                plan = make_plan(BuildOptions(output=Path(tmp) / f"{case}.engine", force=True, progress=False,
                                              **CASES[case]), runtime)
                plan = export_missing_onnx(plan)  # the default model's ONNX, exported once if missing
                for name, build in builders.items():
                    started = time.perf_counter()
                    data, details = build(plan, runtime.module)
                    rows.append({"round": index, "case": case, "builder": name, "engine_bytes": len(data),
                                 "build_s": details["seconds"], "call_s": round(time.perf_counter() - started, 2),
                                 "layers": details["layers"], "sha256": hashlib.sha256(data).hexdigest()})
                    log.info("%s", json.dumps(rows[-1]))
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per case and builder: median build seconds, engine sizes seen, and the median-time ratio to the direct one."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        medians = {}
        for builder in dict.fromkeys(r["builder"] for r in rows):
            mine = [r for r in rows if r["case"] == case and r["builder"] == builder]
            medians[builder] = statistics.median(r["build_s"] for r in mine)
            out.append({"case": case, "builder": builder, "builds": len(mine), "median_build_s": medians[builder],
                        "median_call_s": statistics.median(r["call_s"] for r in mine),
                        "engine_bytes_seen": sorted({r["engine_bytes"] for r in mine}),
                        "layers": sorted({r["layers"] for r in mine})})
        direct = medians.get("direct TensorRT API")
        for row in out:
            if row["case"] == case and direct:
                row["time_ratio_vs_direct"] = round(row["median_build_s"] / direct, 2)
    return out


def write_results(rows: list[dict], summary: list[dict], output: Path, stem: str | None = None) -> Path:
    """``output/<stem>.json`` and ``.md`` (default stem ``builders_<cpu>_<date>``), each whole or not at all."""
    import tensorrt_rtx
    from polygraphy import __version__ as polygraphy_version

    stem = output / (stem or results_stem("builders"))
    context = {"cpu": cpu_name(), "tensorrt_rtx": tensorrt_rtx.__version__, "polygraphy": polygraphy_version,
               "direct_builder_commit": DIRECT_BUILDER_COMMIT, "python": sys.version.split()[0]}
    data = (json.dumps({**context, "summary": summary, "builds": rows}, indent=2) + "\n").encode()
    lines = [f"# Engine builds: Polygraphy vs the direct TensorRT API ({cpu_name()})", "",
             f"TensorRT for RTX {context['tensorrt_rtx']}, Polygraphy {polygraphy_version}; the default model, "
             "default profile; builds alternate in one process. Build s = the builder call alone.", "",
             "| engine | builder | builds | median build s | ratio to direct | engine bytes seen | layers |",
             "|---|---|---:|---:|---:|---|---|"]
    for s in summary:
        lines.append(f"| {s['case']} | {s['builder']} | {s['builds']} | {s['median_build_s']:.2f} | "
                     f"{s.get('time_ratio_vs_direct', '-')} | {', '.join(f'{b:,}' for b in s['engine_bytes_seen'])} | "
                     f"{', '.join(map(str, s['layers']))} |")
    write_files({stem.with_suffix(".json"): data, stem.with_suffix(".md"): ("\n".join(lines) + "\n").encode()})
    return stem.with_suffix(".md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.builders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=number(int, 1), default=3, help="builds per case and builder (default 3)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES),
                        help="which engines of the default model to build (default: all)")
    add_output(parser, "builders")
    add_force(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args), f"no results written to {args.output}")


def _main(args: argparse.Namespace) -> int:
    stem = results_stem("builders")  # today's date: named and checked before the builds
    check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force)
    rows = measure(args.rounds, args.cases)
    print(write_results(rows, summarise(rows), args.output, stem).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
