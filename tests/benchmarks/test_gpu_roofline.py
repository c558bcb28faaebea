"""benchmarks.gpu_roofline runs every code path on a CPU (--cpu-ok: FP16 skipped with its reason, the graph
variants through a stand-in capture) and writes its tables; without --cpu-ok it refuses where there is no GPU."""

import json

import pytest

torch = pytest.importorskip("torch", reason="the roofline benchmark runs PyTorch: pip install '.[export]'")

from banet.machine import results_stem  # noqa: E402
from benchmarks import gpu_roofline  # noqa: E402
from export.parity import IDENTICAL_PSNR  # noqa: E402


@pytest.fixture
def one_thread():
    """One intra-op thread: PyTorch's threads spinning against other processes on a busy CI machine cost more
    than the work of a tiny network."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cpu_smoke_run_writes_every_variant(tmp_path, tiny_weights, one_thread):
    out = tmp_path / "roofline"
    assert gpu_roofline.main(["--cpu-ok", "--weights", str(tiny_weights), "--sizes", "16x16", "32x32",
                              "--repeats", "3", "--warmup", "0", "--output", str(out)]) == 0
    [json_file] = out.glob("roofline_*.json")  # named by banet.machine.results_stem
    assert json_file.name == f"{results_stem('roofline')}.json"
    result = json.loads(json_file.read_text())
    timed = {(r["variant"], r["size"]) for r in result["rows"]}
    assert timed == {(v, s) for v in ("eager fp32 trained", "eager fp32", "graphs fp32") for s in ("16x16", "32x32")}
    assert {r["variant"]: r["attention"] for r in result["rows"]} == {
        "eager fp32 trained": "trained", "eager fp32": "folded", "graphs fp32": "folded"}
    assert all(r["memory_budget_mb"] is None and r["tiled"] is False for r in result["rows"])  # CPU: no budget
    graphs = [r for r in result["rows"] if r["variant"] == "graphs fp32"]
    assert all(r["cuda_graph"] is False and r["capture"] == "stand-in (CPU smoke run)" and "replay_p50_ms" in r
               for r in graphs)  # the graph bookkeeping with a stand-in capture on a CPU
    assert {s["variant"] for s in result["skipped"]} == {"eager fp16", "eager fp16 channels_last", "graphs fp16",
                                                          "graphs fp16 channels_last", "graphs fp16 trained"}
    # the reference against itself: the project's PSNR cap (valid JSON); the folded attention computes the same
    # function (within float32 rounding), and the stand-in replays it; the floor estimate is there for each size
    drift = {d["variant"]: (d["psnr_db_vs_eager_fp32"], d["non_finite_values"]) for d in result["drift"]}
    assert list(drift) == ["eager fp32 trained", "eager fp32", "graphs fp32"]
    assert drift["eager fp32 trained"] == (IDENTICAL_PSNR, 0)
    assert all(db > 100 and bad == 0 for db, bad in (drift["eager fp32"], drift["graphs fp32"])), drift
    assert "Infinity" not in json_file.read_text() and not list(out.glob("*.partial"))
    assert set(result["floor_ms_estimate"]) == {"16x16", "32x32"}
    table = json_file.with_suffix(".md").read_text()
    assert "| graphs fp32 | 32x32 |" in table and "FP16 needs a CUDA GPU" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would run")
def test_refuses_without_a_gpu(tmp_path, capsys):
    assert gpu_roofline.main(["--output", str(tmp_path / "r")]) == 2
    assert "no CUDA GPU visible to PyTorch" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_refuses_bad_input_and_keeps_results_in_a_named_folder(tmp_path, tiny_weights, capsys, monkeypatch):
    """One line before any work: sizes and counts on the command line, a missing checkpoint, and a results file of
    the same GPU and date in a folder the user named (out/gpu_checks/roofline, its own, is refreshed)."""
    for argv in (["--sizes", "0x0"], ["--repeats", "2"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            gpu_roofline.build_parser().parse_args(argv)
        assert exit_.value.code == 2 and "Traceback" not in capsys.readouterr().err
    monkeypatch.setattr(gpu_roofline, "measure", lambda *a, **k: pytest.fail("ran before refusing"))
    out = tmp_path / "roofline"
    assert gpu_roofline.main(["--cpu-ok", "--weights", str(tmp_path / "nope.safetensors"), "--output", str(out)]) == 1
    assert capsys.readouterr().err.startswith("error: ") and not out.exists()
    out.mkdir()
    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    kept = out / f"{results_stem('roofline', machine)}.json"
    kept.write_text("kept")
    assert gpu_roofline.main(["--cpu-ok", "--weights", str(tiny_weights), "--output", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err and kept.read_text() == "kept"
