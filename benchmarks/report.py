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


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown(result: dict) -> str:
    lines = [f"# Benchmark: {result['machine']}, {result['date']}", "",
             f"Python {result.get('python')}, torch {result.get('torch', '-')}, ONNX Runtime threads: "
             f"{result.get('threads') or 'all'}; whole run {result.get('total_s', 0):.0f} s. Latency is p50 of "
             "warmed-up calls (CUDA events on GPUs); speed-up is PyTorch eager FP32's p50 divided by the row's p50, "
             "both measured in this run.", "",
             "| model | system | precision | device | size | batch | p50 ms | p95 ms | p99 ms | images/s | "
             "speed-up | peak host MB | peak device MB |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['system']} | {r['precision']} | {r['device']} | {r['size']} "
                     f"| {r['batch']} | {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} "
                     f"| {_fmt(r['images_per_s'], 2)} | {_fmt(r['speedup_vs_torch_eager'], 2)}x "
                     f"| {_fmt(r['peak_host_mb'], 0)} | {_fmt(r['peak_device_mb'], 0)} |")
    lines += ["", "## Model cost and the latency floor of named GPUs (estimates from peak throughput)", "",
              "| model | size | parameters | GFLOP/image | RTX 2080 Ti floor fp32 / fp16 / int8 ms "
              "| H100 SXM floor fp16 ms |", "|---|---|---:|---:|---:|---:|"]
    for c in result["cost"]:
        t = c["floor_ms_estimate"]["RTX 2080 Ti"]
        h = c["floor_ms_estimate"]["H100 SXM"]
        lines.append(f"| {c['model']} | {c['size']} | {c['parameters']:,} | {c['gflop_per_image']:,.1f} | "
                     f"{t['fp32']:.1f} / {t['fp16']:.1f} / {t['int8']:.1f} | {h['fp16']:.2f} |")
    if result["skipped"]:
        lines += ["", "## Skipped here", ""]
        for s in result["skipped"]:
            where = f" {s['size']} b{s['batch']}" if "size" in s else ""
            lines.append(f"- {s['model']} / {s['system']}{where}: {s['reason']}")
    lines += ["", "## Quality", "", result.get("quality_note") or ""]
    return "\n".join(lines) + "\n"


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
        for system in sorted({r["system"] for r in rows}):
            pts = sorted((int(r["size"].split("x")[0]) * int(r["size"].split("x")[1]), r["p50_ms"], r["size"])
                          for r in rows if r["system"] == system)
            ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o", label=system)
        ax.set_xlabel("megapixels per image (batch 1)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{model}\n{result['machine']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(f"{stem}_latency_{'full' if model.startswith('full') else 'default'}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
