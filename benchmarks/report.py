"""Benchmark results as a Markdown table and PNG plots (latency vs resolution; quality vs speed)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
DRIFT_REPORT = Path("out/drift/drift_report.json")


def attach_quality(result: dict, path: Path = DRIFT_REPORT) -> None:
    """Copy the drift report's per-precision quality (made by ``python -m calibration.drift``) if present."""
    if not path.exists():
        result["quality"] = None
        result["quality_note"] = f"no drift report at {path}; run: python -m calibration.drift"
        return
    result["quality"] = json.loads(path.read_text())
    result["quality_note"] = f"from {path}"


#: The drift-report row that measures each benchmarked system's numerics. Systems not listed (TensorRT engines,
#: torch.compile, channels_last, CUDA graphs) compute differently from every measured row, so they get no quality
#: figures rather than borrowed ones; an engine's own drift is in its manifest (see the engine table).
QUALITY_SOURCE = {
    "torch eager": "FP32 PyTorch (reference)",
    "torch fp16": "FP16 PyTorch (emulated)",
    "onnxruntime fp32": "FP32 ONNX",
    "onnxruntime int8 (ort)": "INT8 ort",
    "onnxruntime int8 (trt)": "INT8 trt",
    "openvino fp32": "FP32 OpenVINO",
    "openvino fp32 (dynamic)": "FP32 OpenVINO, dynamic shapes",
    "openvino bf16": "FP32 OpenVINO in BF16",
    "Deblurrer torch cpu (bf16, channels_last, folded)": "Checkpoint PyTorch in BF16",
    "openvino int8 (ort)": "INT8 ort OpenVINO",
    "openvino int8 (trt)": "INT8 trt OpenVINO",
    "openvino int8 (ov)": "INT8 ov OpenVINO",
    "openvino int8 (ov, bf16)": "INT8 ov OpenVINO in BF16",
    "openvino int8 (ort, dynamic)": "INT8 ort OpenVINO, dynamic shapes",
    "openvino int8 (trt, dynamic)": "INT8 trt OpenVINO, dynamic shapes",
    "openvino int8 (ov, dynamic)": "INT8 ov OpenVINO, dynamic shapes",
}


def quality_for(result: dict, row: dict) -> dict | None:
    """The drift-report row for a benchmark row of the same weights, or None."""
    quality = result.get("quality")
    if not quality or not row["model"].startswith("default") or row["system"] not in QUALITY_SOURCE:
        return None
    model = quality.get("model", {})
    if model.get("name") != Path(result.get("weights", "")).name:
        return None
    if model.get("sha256") and result.get("weights_sha256") and model["sha256"] != result["weights_sha256"]:
        return None  # same file name, other weights (e.g. a newer snapshot): the report does not describe them
    return next((q for q in quality.get("rows", []) if q["name"] == QUALITY_SOURCE[row["system"]]), None)


def engine_builds(folder: Path) -> list[dict]:
    """Build time, size and targets of every engine manifest in ``folder`` (written by export/build_trt.py)."""
    builds = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "engine_bytes" not in data:
            continue
        build = data.get("build", {})
        builds.append({"engine": data.get("engine"), "runtime": f"{data.get('runtime')} {data.get('runtime_version')}",
                       "precision": data.get("precision"), "targets": ",".join(data.get("targets") or []) or "default",
                       "onnx": data.get("onnx", {}).get("path"), "network": data.get("metadata", {}).get(
                           "banet.config"), "build_s": build.get("seconds"), "layers": build.get("network_layers"),
                       "builder": build.get("builder") or "TensorRT API (before Polygraphy)",
                       "engine_mb": data["engine_bytes"] / 1e6, "gpu": (data.get("gpu") or {}).get("name"),
                       "drift": data.get("drift")})
    return builds


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown(result: dict) -> str:
    lines = [f"# Benchmark: {result['machine']}, {result['date']}", "",
             f"Python {result.get('python')}, torch {result.get('torch', '-')}; whole run "
             f"{result.get('total_s', 0):.0f} s. Latency is p50 of warmed-up calls (CUDA events on GPUs), the systems "
             "of one size, batch and thread count timed interleaved (one call of each per round); speed-up is "
             "PyTorch eager FP32's p50 at the same threads divided by the row's p50, both measured in this run. "
             "threads: intra-op threads given to every system (all: the library's default).", "",
             "| model | system | precision | device | threads | size | batch | p50 ms | p95 ms | p99 ms | images/s | "
             "speed-up | peak host MB | peak device MB | drift vs FP32 dB | held-out PSNR dB (delta) |",
             "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        q = quality_for(result, r)
        drift = _fmt(q["drift_psnr_db"]) if q else "-"
        restored = f"{q['psnr']:.2f} ({q['delta_psnr_db']:+.2f})" if q else "-"
        lines.append(f"| {r['model']} | {r['system']} | {r['precision']} | {r['device']} "
                     f"| {r.get('threads') or 'all'} | {r['size']} "
                     f"| {r['batch']} | {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} "
                     f"| {_fmt(r['images_per_s'], 2)} | {_fmt(r['speedup_vs_torch_eager'], 2)}x "
                     f"| {_fmt(r['peak_host_mb'], 0)} | {_fmt(r['peak_device_mb'], 0)} | {drift} | {restored} |")
    lines += ["", "## Model cost and the latency floor of named GPUs (estimates from peak throughput)", "",
              "| model | size | parameters | GFLOP/image | operations per forward | RTX 2080 Ti floor fp32 / fp16 / "
              "int8 ms | H100 SXM floor fp16 ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for c in result["cost"]:
        t = c["floor_ms_estimate"]["RTX 2080 Ti"]
        h = c["floor_ms_estimate"]["H100 SXM"]
        operations = f"{c['operations_per_forward']:,}" if "operations_per_forward" in c else "-"
        lines.append(f"| {c['model']} | {c['size']} | {c['parameters']:,} | {c['gflop_per_image']:,.1f} | "
                     f"{operations} | {t['fp32']:.1f} / {t['fp16']:.1f} / {t['int8']:.1f} | {h['fp16']:.2f} |")
    if result.get("engines"):
        lines += ["", "## Engine builds (from the manifests in engines/)", "",
                  "| engine | runtime | builder | precision | targets | built on GPU | build s | engine MB | layers |",
                  "|---|---|---|---|---|---|---:|---:|---:|"]
        for e in result["engines"]:
            lines.append(f"| {e['engine']} | {e['runtime']} | {e['builder']} | {e['precision']} | {e['targets']} "
                         f"| {e['gpu'] or 'none'} "
                         f"| {_fmt(e['build_s'])} | {_fmt(e['engine_mb'])} | {e['layers'] or '-'} |")
    if result.get("end_to_end"):
        from benchmarks.end_to_end import table

        lines += ["", "## A whole photo through the command line (one fresh process per row, all cores)", "",
                  *table(result["end_to_end"])]
    if result["skipped"]:
        lines += ["", "## Skipped here", ""]
        for s in result["skipped"]:
            where = f" {s['size']} b{s['batch']} t{s.get('threads') or 'all'}" if "size" in s else ""
            lines.append(f"- {s['model']} / {s['system']}{where}: {s['reason']}")
    images = ((result.get("quality") or {}).get("heldout") or {}).get("images")
    held_out = f"the {images} held-out images" if isinstance(images, int) else "the held-out images"
    lines += ["", "## Quality", "", "Drift and held-out restoration PSNR come from the drift report (PSNR of each "
              f"output vs FP32 PyTorch; restoration PSNR on {held_out}, delta vs FP32 PyTorch), "
              + (result.get("quality_note") or "")]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    """A figure as a PNG written whole or not at all (:func:`benchmarks.cli.write_files`: never a torn plot)."""
    import io

    from benchmarks.cli import write_files

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_files({path: buffer.getvalue()})


def plots(result: dict, stem: Path) -> list[Path]:
    """latency vs resolution (per system, batch 1) and images/s per system; PNG files next to the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model in sorted({r["model"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["model"] == model and r["batch"] == 1]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for system, threads in sorted({(r["system"], r.get("threads") or 0) for r in rows}):
            pts = sorted((int(r["size"].split("x")[0]) * int(r["size"].split("x")[1]), r["p50_ms"], r["size"])
                          for r in rows if r["system"] == system and (r.get("threads") or 0) == threads)
            ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{system}, {threads or 'all'} threads")
        ax.set_xlabel("megapixels per image (batch 1)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{model}\n{result['machine']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(f"{stem}_latency_{'full' if model.startswith('full') else 'default'}.png")
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    quality_plot = _quality_speed_plot(result, Path(f"{stem}_quality_speed.png"), plt)
    return written + ([quality_plot] if quality_plot else [])


def _quality_speed_plot(result: dict, path: Path, plt) -> Path | None:
    """Held-out PSNR vs speed-up over PyTorch eager, one point per system with drift figures (batch 1)."""
    points = [(r, quality_for(result, r)) for r in result["rows"] if r["batch"] == 1]
    points = [(r, q) for r, q in points if q and r["speedup_vs_torch_eager"]]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labelled = set()
    for size in sorted({r["size"] for r, _ in points}, key=lambda t: int(t.split("x")[0])):
        chosen = [(r, q) for r, q in points if r["size"] == size]
        ax.scatter([r["speedup_vs_torch_eager"] for r, _ in chosen], [q["psnr"] for _, q in chosen], label=size)
        for r, q in chosen:
            if r["system"] in labelled:  # one label per system: its points share a PSNR and would overlap
                continue
            labelled.add(r["system"])
            ax.annotate(r["system"], (r["speedup_vs_torch_eager"], q["psnr"]), fontsize=7,
                        xytext=(4, 4 + 11 * (len(labelled) % 3)), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"})
    blurred = result["quality"]["heldout"]["psnr_blurred"]
    ax.axhline(blurred, color="grey", ls="--", lw=0.8, label="blurred input")
    ax.set_ylim(blurred - 0.2, max(q["psnr"] for _, q in points) + 0.6)  # room for the labels above the points
    ax.set_xlabel("speed-up vs PyTorch eager FP32 (same run, batch 1)")
    ax.set_ylabel("held-out restoration PSNR (dB)")
    ax.set_title(f"quality vs speed, default network\n{result['machine']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="size", title_fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
