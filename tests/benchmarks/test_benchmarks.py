"""Benchmarks: model cost is right, and a quick run produces the table, JSON and plots (timings not asserted)."""

import json

import pytest

from banet.config import FULL
from benchmarks import cost
from benchmarks.run import main
from benchmarks.timing import time_call


def test_full_network_cost_matches_hand_count():
    assert cost.parameters(FULL) == 17_988_547
    total = cost.flops(FULL, 720, 1280)
    assert total == pytest.approx(7.19e12, rel=0.01)
    # Convolutions dominate: the en_layer1 conv alone is 2 * 3*3*3*64 MACs per pixel.
    assert cost.flops(FULL, 720, 1280, batch=2) == 2 * total


def test_lower_bound_is_flops_over_peak():
    assert cost.lower_bound_ms(54e12, 54.0) == pytest.approx(1000.0)


def test_time_call_percentiles():
    calls = []
    timing = time_call(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(timing.samples_ms) == 5
    assert timing.p50 <= timing.p95 <= timing.p99


def test_quick_run_writes_results(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--quick", "--weights", str(tiny_weights), "--output", str(tmp_path / "res")]) == 0
    [json_file] = (tmp_path / "res").glob("*.json")
    result = json.loads(json_file.read_text())
    systems = {r["system"] for r in result["rows"]}
    assert {"torch eager", "onnxruntime fp32"} <= systems
    for row in result["rows"]:
        assert row["p50_ms"] > 0 and row["speedup_vs_torch_eager"] > 0 and row["samples"] >= 3
    eager = next(r for r in result["rows"] if r["system"] == "torch eager")
    assert eager["speedup_vs_torch_eager"] == 1.0
    assert all(s["reason"] for s in result["skipped"])
    assert result["cost"][0]["gflop_per_image"] > 0
    assert json_file.with_suffix(".md").read_text().startswith("# Benchmark:")
    assert list((tmp_path / "res").glob("*_latency_default.png"))
