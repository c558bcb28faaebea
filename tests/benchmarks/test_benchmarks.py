"""Benchmarks: model cost is right, and a quick run produces the table, JSON and plots (timings not asserted)."""

import json

import pytest

from banet.config import FULL
from benchmarks import cost
from benchmarks.run import main
from benchmarks.timing import time_call, time_interleaved


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
    assert result["cost"][0]["gflop_per_image"] > 0 and result["cost"][0]["operations_per_forward"] > 0
    assert json_file.with_suffix(".md").read_text().startswith("# Benchmark:")
    assert list((tmp_path / "res").glob("*_latency_default.png"))


def test_quality_columns_engine_table_and_quality_plot(tmp_path, tiny_weights, monkeypatch):
    """Drift-report rows land on the systems they measured (and only those); engine manifests make a table."""
    monkeypatch.chdir(tmp_path)
    drift = {"model": {"name": tiny_weights.name}, "heldout": {"psnr_blurred": 20.0, "images": 3},
             "rows": [{"name": "FP32 PyTorch (reference)", "drift_psnr_db": 200.0, "psnr": 21.5, "delta_psnr_db": 0.0},
                      {"name": "FP32 ONNX", "drift_psnr_db": 150.25, "psnr": 21.5, "delta_psnr_db": -0.0}]}
    (tmp_path / "drift.json").write_text(json.dumps(drift))
    engines = tmp_path / "eng"
    engines.mkdir()
    (engines / "x_fp16.json").write_text(json.dumps({"engine": "x_fp16.engine", "engine_bytes": 2_500_000,
                                                      "runtime": "tensorrt-rtx", "runtime_version": "1.7",
                                                      "precision": "fp16", "targets": ["sm75"],
                                                      "build": {"seconds": 3.2, "network_layers": 99,
                                                                "builder": "Polygraphy 0.53.6 (EngineBytesFromNetwork)"
                                                                }}))
    (engines / "notes.json").write_text("[1, 2]")  # not a manifest: ignored
    assert main(["--quick", "--weights", str(tiny_weights), "--output", str(tmp_path / "res"),
                 "--drift-report", str(tmp_path / "drift.json"), "--engines", str(engines)]) == 0
    [json_file] = (tmp_path / "res").glob("*.json")
    result = json.loads(json_file.read_text())
    assert [e["engine"] for e in result["engines"]] == ["x_fp16.engine"]
    table = json_file.with_suffix(".md").read_text()
    onnx_line = next(line for line in table.splitlines() if "| onnxruntime fp32 |" in line)
    assert onnx_line.endswith("| 150.2 | 21.50 (-0.00) |")
    assert ("| x_fp16.engine | tensorrt-rtx 1.7 | Polygraphy 0.53.6 (EngineBytesFromNetwork) | fp16 | sm75 | none "
            "| 3.2 | 2.5 | 99 |") in table
    assert list((tmp_path / "res").glob("*_quality_speed.png"))
    assert "restoration PSNR on the 3 held-out images" in table  # the report's count (it said 26 for a --limit run)
    # a drift report of other weights (by name, or by content under the same name) is not attributed to these
    drift["model"]["sha256"] = "0" * 64
    (tmp_path / "drift.json").write_text(json.dumps(drift))
    assert main(["--quick", "--weights", str(tiny_weights), "--output", str(tmp_path / "res2"), "--no-plots",
                 "--drift-report", str(tmp_path / "drift.json"), "--engines", str(engines)]) == 0
    [md] = (tmp_path / "res2").glob("*.md")
    assert next(line for line in md.read_text().splitlines() if "| onnxruntime fp32 |" in line).endswith("| - | - |")


def test_builder_comparison_summary():
    """benchmarks.builders: medians per case and builder, the sizes seen, and the time ratio to the direct builder."""
    from benchmarks.builders import summarise

    rows = [{"case": "fp16_sm75", "builder": b, "engine_bytes": size, "build_s": t, "call_s": t + 0.1, "layers": 9}
            for b, size, t in [("direct TensorRT API", 100, 2.0), ("Polygraphy", 100, 3.0),
                               ("direct TensorRT API", 102, 4.0), ("Polygraphy", 100, 1.0),
                               ("direct TensorRT API", 100, 3.0), ("Polygraphy", 101, 2.0)]]
    summary = {s["builder"]: s for s in summarise(rows)}
    assert summary["Polygraphy"]["median_build_s"] == 2.0 and summary["direct TensorRT API"]["median_build_s"] == 3.0
    assert summary["Polygraphy"]["time_ratio_vs_direct"] == 0.67
    assert summary["direct TensorRT API"]["engine_bytes_seen"] == [100, 102] and summary["Polygraphy"]["builds"] == 3


def test_time_interleaved_takes_one_sample_of_each_per_round():
    calls = []
    timings = time_interleaved({"a": (lambda: calls.append("a"), False), "b": (lambda: calls.append("b"), False)},
                               repeats=4)
    assert calls == ["a", "b"] * 4
    assert [len(t.samples_ms) for t in timings.values()] == [4, 4]


def test_peers_per_thread_count_with_ratios_from_the_same_threads(tmp_path, tiny_weights, monkeypatch):
    pytest.importorskip("openvino", reason="OpenVINO is a peer here: pip install '.[openvino]'")
    monkeypatch.chdir(tmp_path)
    import torch

    process_threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a count the run does not use: it must be the caller's again afterwards
    try:
        assert main(["--quick", "--weights", str(tiny_weights), "--output", str(tmp_path / "res"), "--no-plots",
                     "--threads", "1", "2", "--only", "torch eager", "openvino*", "onnxruntime fp32 (static)"]) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(process_threads)
    [json_file] = (tmp_path / "res").glob("*.json")
    result = json.loads(json_file.read_text())
    rows = result["rows"]
    # "(rewritten)", "(as written)": the other choice of the backend's graph rewrites, the peers that measure them
    peers = ["torch eager", "openvino fp32", "openvino fp32 (dynamic)", "openvino fp32 (rewritten)",
             "onnxruntime fp32 (static)"]
    from runtime.backends.openvino_backend import openvino_bf16_units

    if openvino_bf16_units():
        # Deblurrer(precision="bf16"): timed where the CPU has bfloat16 units
        peers += ["openvino bf16", "openvino bf16 (as written)"]
        assert {r["precision"] for r in rows if r["system"] == "openvino bf16"} == {"bf16"}
    else:
        assert any(s["system"] == "openvino bf16" and "no bf16 units" in s["reason"] for s in result["skipped"])
    assert {(r["system"], r["threads"]) for r in rows} == {(s, t) for s in peers for t in (1, 2)}
    for threads in (1, 2):
        eager = next(r for r in rows if r["system"] == "torch eager" and r["threads"] == threads)
        other = next(r for r in rows if r["system"] == "openvino fp32" and r["threads"] == threads)
        assert other["speedup_vs_torch_eager"] == pytest.approx(eager["p50_ms"] / other["p50_ms"])
    assert "| openvino fp32 | fp32 | cpu | 1 | 256x256 |" in json_file.with_suffix(".md").read_text()


def test_bf16_peer_is_skipped_with_its_reason_on_a_cpu_without_bfloat16_units(monkeypatch):
    pytest.importorskip("openvino", reason="OpenVINO is a peer here: pip install '.[openvino]'")
    from benchmarks.systems import Unavailable, openvino_system
    from runtime.backends import openvino_backend

    def no_bf16(core, device, precision, file_precision, name):
        raise openvino_backend.BackendUnavailableError(f"this {device} has no {precision} units")

    monkeypatch.setattr(openvino_backend, "check_lowering", no_bf16)
    from banet.defaults import DEFAULT_ONNX

    with pytest.raises(Unavailable, match="no bf16 units"):
        openvino_system(DEFAULT_ONNX, "openvino bf16", 1, inference_precision="bf16")


def test_end_to_end_rows_time_the_real_command_and_keep_a_failure_as_its_reason():
    from benchmarks.end_to_end import end_to_end

    ok, failed = end_to_end(48, 64, threads=1, cases=(("onnxruntime", "int8"), ("tensorrt", "fp32")))
    assert ok["exit"] == 0 and ok["wall_s"] > 0 and ok["peak_rss_mb"] > 20 and "error" not in ok
    assert "--precision int8" in ok["command"] and ok["size"] == "48x64"
    assert failed["exit"] == 2 and failed["error"].startswith("error: ")  # a bad option (no .engine): exit 2


def test_a_replaced_run_leaves_no_plot_of_the_old_one(tmp_path, tiny_weights, monkeypatch, capsys):
    """A run's files are its table and its plots: rerun with --force --no-plots (or drawing fewer plots), the old
    run's plots went, not stayed beside the new numbers; without --force an old plot of the name is refused."""
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "res"
    run = ["--quick", "--weights", str(tiny_weights), "--only", "torch eager", "--output", str(res)]  # one system
    assert main(run) == 0
    [plot] = res.glob("*_latency_default.png")
    assert main([*run, "--no-plots", "--force"]) == 0
    assert not list(res.glob("*.png")) and f"removed {plot}" in capsys.readouterr().out
    for stale in res.glob("*.json"):
        stale.unlink()
    for stale in res.glob("*.md"):
        stale.unlink()
    plot.write_bytes(b"an old plot")
    assert main([*run, "--no-plots"]) == 1
    assert plot.name in capsys.readouterr().err and plot.read_bytes() == b"an old plot"
