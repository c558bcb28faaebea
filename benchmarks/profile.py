"""Where the time goes: each layer of ONNX files timed by the inference engine's own profiler, by network block,
operator and kernel (what trtexec's ``--dumpProfile`` does for TensorRT, for the CPU backends).

    python -m benchmarks.profile                          # default FP32 and INT8 ONNX on OpenVINO, 720x1280
    python -m benchmarks.profile engines/banet_default.onnx engines/banet_default_int8_ort.onnx --backend onnxruntime
    python -m benchmarks.profile --size 480x640 --threads 1 --runs 10 --output out/profile

With two or more files, the block table puts them side by side with each one's time as a multiple of the first's:
which blocks INT8 speeds up, which it leaves as they were (blocks kept in float, or operators a backend has no
int8 kernel for). Blocks are those of ``calibration.sensitivity`` and ``calibration.quantize --exclude``. Times
are with the profiler on (a little slower than ``benchmarks.run``'s, which is where speeds are compared) and say
where time goes on this machine, not how fast another one is. Tables print; ``--output`` also writes
``profile_<backend>[-bf16]_<cpu>_<date>.json`` and ``.md`` there.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from banet.errors import ArtifactError, first_line
from benchmarks.cli import BenchmarkError, add_force, check_results, run_main, size_type, write_files

log = logging.getLogger(__name__)


def default_files(backend: str = "openvino") -> list[Path]:
    """The embedded default model's shipped files: its FP32 ONNX and the INT8 file of ``backend``'s flavour (what
    ``Deblurrer()`` and ``Deblurrer(precision="int8")`` run there), the INT8 one left out where an install lacks
    it."""
    from banet.artifacts import int8_onnx_path
    from banet.defaults import DEFAULT_ONNX
    from runtime.selection import INT8_FLAVOUR

    if not DEFAULT_ONNX.is_file():
        raise BenchmarkError(f"the default model's ONNX is missing ({DEFAULT_ONNX}); reinstall banet-deploy, or "
                             "name the files to profile")
    int8 = int8_onnx_path(DEFAULT_ONNX, INT8_FLAVOUR[backend])
    return [DEFAULT_ONNX, int8] if int8.is_file() else [DEFAULT_ONNX]


def check_files(files: list[Path]) -> None:
    """Refuse, before any run, what is not a banet-deploy network ONNX (an engine, an app graph, a missing file):
    :func:`banet.metadata.read_onnx_metadata`'s one line."""
    from banet.metadata import read_onnx_metadata

    for path in files:
        try:
            read_onnx_metadata(path)
        except (ArtifactError, OSError) as exc:
            raise BenchmarkError(f"cannot profile: {first_line(exc)}") from exc
    if len(set(map(Path.resolve, files))) < len(files):
        raise BenchmarkError("a file is named twice; give each file once")


def markdown(profiles: list[dict], machine: str, top: int) -> str:
    """The profiles as Markdown: totals, blocks side by side, then each file's kernels and slowest layers."""
    first = profiles[0]
    arithmetic = " in bfloat16" if first.get("arithmetic") == "bf16" else ""
    lines = [f"# Where the time goes: {first['backend']}{arithmetic} on {machine}, input {first['shape']}, "
             f"{first['threads'] or 'default'} threads", "",
             f"Per-layer times from the engine's own profiler, mean of {first['runs']} runs after warm-up (profiling "
             "on). Layers' sum: the layers' times added up; the wall time also holds what runs between them.", "",
             "| file | wall ms (median) | layers' sum ms | layers |", "|---|---:|---:|---:|"]
    lines += [f"| `{Path(p['file']).name}` | {p['wall_ms_median']:,.1f} | {p['kernel_ms']:,.1f} | {p['layers']} |"
              for p in profiles]
    blocks = {p["file"]: {row["name"]: row for row in p["by_block"]} for p in profiles}
    order = [row["name"] for row in first["by_block"]]
    order += sorted({name for p in profiles for name in blocks[p["file"]]} - set(order))
    names = [f"`{Path(p['file']).name}`" for p in profiles]
    ratio = [f"{n} / first" for n in names[1:]]
    lines += ["", "## By block (ms per run, share of the layers' sum)", "",
              "| block | " + " | ".join(names + ratio) + " |", "|---|" + "---:|" * (len(names) + len(ratio))]
    for name in order:
        cells = []
        for p in profiles:
            row = blocks[p["file"]].get(name)
            cells.append(f"{row['ms']:,.1f} ({100 * row['share']:.1f}%)" if row else "-")
        base = blocks[first["file"]].get(name)
        for p in profiles[1:]:
            row = blocks[p["file"]].get(name)
            cells.append(f"{row['ms'] / base['ms']:.2f}x" if row and base and base["ms"] > 0 else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for p in profiles:
        lines += ["", f"## `{Path(p['file']).name}`: operators and kernels (top {top})", "",
                  "| operator kernel | ms | share |", "|---|---:|---:|"]
        lines += [f"| {row['name']} | {row['ms']:,.1f} | {100 * row['share']:.1f}% |" for row in p["by_kernel"][:top]]
        lines += ["", f"Slowest layers of `{Path(p['file']).name}`:", "",
                  "| layer | operator | kernel | block | ms |", "|---|---|---|---|---:|"]
        lines += [f"| `{row['name']}` | {row['op_type']} | {row['kernel']} | {row['block']} | {row['ms']:,.2f} |"
                  for row in p["slowest"][:top]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from banet.cli_types import number, path_arg, threads
    from export.op_profile import BACKENDS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=path_arg,
                        help="network ONNX files (FP32, FP16, INT8 Q/DQ) to profile, the first one the baseline of "
                             "the ratios (default: the default model's shipped FP32 ONNX and the backend's INT8 "
                             "file: ov on OpenVINO, ort on ONNX Runtime)")
    parser.add_argument("--backend", choices=BACKENDS, default="openvino",
                        help="whose profiler: openvino (performance counters, compiled for this one input shape) "
                             "or onnxruntime (its JSON profile, CPU provider); default %(default)s")
    parser.add_argument("--bf16", action="store_true",
                        help="OpenVINO computes FP32 files in bfloat16, as Deblurrer(precision='bf16') does (CPUs "
                             "with bfloat16 units)")
    parser.add_argument("--size", type=size_type(), default=(720, 1280), metavar="HxW",
                        help="input height x width in pixels (default 720x1280)")
    parser.add_argument("--batch", type=number(int, 1, 64), default=1, help="images per run (default 1)")
    parser.add_argument("--threads", type=threads(1), default=None, metavar="N",
                        help="the backend's threads (default: its own choice, usually all cores)")
    parser.add_argument("--runs", type=number(int, 1, 1000), default=5,
                        help="measured runs after one warm-up run (default %(default)s)")
    parser.add_argument("--top", type=number(int, 1, 1000), default=12,
                        help="rows in each file's kernel and slowest-layer tables (default %(default)s)")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="also write profile_<backend>[-bf16]_<cpu>_<date>.json and .md in this folder")
    add_force(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args), "no profile written")


def _main(args: argparse.Namespace) -> int:
    from banet.machine import cpu_name, results_stem
    from export.op_profile import profile_file

    if args.bf16 and args.backend != "openvino":
        raise BenchmarkError("--bf16 is OpenVINO's bfloat16 arithmetic; use it with --backend openvino")
    files = list(args.files)
    check_files(files)  # a file given is refused before the default model is exported
    files = files or default_files(args.backend)
    stem = results_stem(f"profile_{args.backend}{'-bf16' if args.bf16 else ''}", cpu_name())
    if args.output is not None:
        check_results(args.output, [f"{stem}.json", f"{stem}.md"], args.force,
                      inputs={f"profiled file {path}": path for path in files})
    height, width = args.size
    profiles = []
    for path in files:
        log.info("profiling %s on %s at %dx%d", path, args.backend, height, width)
        try:
            profile = profile_file(path, args.backend, (args.batch, 3, height, width), args.threads, args.runs,
                                   bf16=args.bf16)
        except (RuntimeError, OSError, MemoryError) as exc:
            raise BenchmarkError(f"profiling {path} on {args.backend} failed: {exc}") from exc
        profiles.append(profile.to_dict(args.top))
    table = markdown(profiles, cpu_name(), args.top)
    print(table)
    if args.output is not None:
        path = args.output / stem
        report = {"machine": cpu_name(), "profiles": profiles}
        write_files({path.with_suffix(".json"): (json.dumps(report, indent=2) + "\n").encode(),
                     path.with_suffix(".md"): table.encode()})
        print(f"wrote {path}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
