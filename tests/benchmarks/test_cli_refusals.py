"""The benchmark command lines refuse bad input in one line before any work (no traceback, no run, no file), never
replace a results file of the same name (same machine and date) without --force, and leave no half-written file
when a write fails or the run is interrupted. Nothing here times anything."""

from __future__ import annotations

import errno
import json

import pytest

from banet.machine import results_stem
from benchmarks import batch_throughput, builders, end_to_end, memory
from benchmarks import run as bench_run


def _refused_by_argparse(parser, argv, capsys, needle):
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--sizes", "0x0"], "at least 2"),
    (["--sizes", "15x15"], "even"),
    (["--full-sizes", "7x9"], "even"),
    (["--sizes", "100000x100000"], "megapixels"),
    (["--batches", "0"], "batch size"),
    (["--batches", "-1"], "batch size"),
    (["--batches", "100000"], "over the limit"),
    (["--repeats", "0"], "at least 1"),
    (["--warmup", "-1"], "at least 0"),
    (["--max-call-s", "nan"], "above 0"),
    (["--max-call-s", "-1"], "above 0"),
    (["--threads", "-1"], "CPU"),
    (["--threads", "100000"], "CPU"),  # PyTorch died with a segmentation fault
    (["--label", "a_b"], "letters, digits and hyphens"),  # _ separates the file name's fields
    (["--label", "../x"], "letters, digits and hyphens"),  # never a path
])
def test_run_refuses_nonsense_numbers_on_the_command_line(argv, needle, capsys):
    _refused_by_argparse(bench_run.build_parser(), argv, capsys, needle)


#: each benchmark's work, replaced by a failure in these tests: a refusal must come before it
_WORK = ("end_to_end", "_child", "run", "measure")


def _forbid_work(module, monkeypatch):
    for work in _WORK:
        if hasattr(module, work):
            monkeypatch.setattr(module, work, lambda *a, **k: pytest.fail("ran before refusing"))


@pytest.mark.parametrize("module, argv, needle", [
    (end_to_end, ["0x0"], "at least 2"),
    (end_to_end, ["100000x100000"], "megapixels"),
    (end_to_end, ["16x16", "--threads", "-1"], "CPU"),
    (end_to_end, ["16x16", "--threads", "100000"], "CPU"),
    (batch_throughput, ["--threads", "100000"], "CPU"),
    (batch_throughput, ["--photos", "1"], "at least 2"),
    (batch_throughput, ["--size", "100000x100000"], "megapixels"),
    (memory, ["--sizes", "0x0"], "at least 2"),
    (memory, ["--agreement", "0x5"], "at least 2"),
    (memory, ["--sizes", "100000x100000"], "megapixels"),
    (builders, ["--rounds", "0"], "at least 1"),
], ids=lambda v: v.__name__.split(".")[-1] if hasattr(v, "__name__") else None)
def test_other_benchmarks_refuse_nonsense_numbers(module, argv, needle, tmp_path, capsys, monkeypatch):
    _forbid_work(module, monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, "--output", str(tmp_path / "res")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def _small(tiny_weights, out, *extra):
    return ["--weights", str(tiny_weights), "--sizes", "16x16", "--full-sizes", "--batches", "1", "--repeats", "1",
            "--warmup", "0", "--only", "torch eager", "--no-plots", "--output", str(out), *extra]


def _no_work(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran although the command should have been refused first")

    monkeypatch.setattr(bench_run, "benchmark", never)


def _one_error_line(capsys, needle):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err, err
    return err


def test_run_refuses_unusable_files_before_any_work(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    out = tmp_path / "res"
    assert bench_run.main(_small(tmp_path / "missing.safetensors", out)) == 1
    _one_error_line(capsys, "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    assert bench_run.main(_small(tmp_path / "bad.safetensors", out)) == 1
    _one_error_line(capsys, "bad.safetensors")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    for name in ("missing.onnx", "bad.onnx"):
        assert bench_run.main(_small(tiny_weights, out, "--int8", str(tmp_path / name))) == 1
        _one_error_line(capsys, f"--int8 {tmp_path / name}")
    assert bench_run.main(_small(tiny_weights, out, "--drift-report", str(tmp_path / "bad.onnx"))) == 1  # not JSON
    _one_error_line(capsys, "--drift-report")
    # a typed path that is not there: before, the run went on without quality columns or engine rows, exit 0
    assert bench_run.main(_small(tiny_weights, out, "--drift-report", str(tmp_path / "drfit.json"))) == 1
    _one_error_line(capsys, "drfit.json: no such file")
    assert bench_run.main(_small(tiny_weights, out, "--engines", str(tmp_path / "engnies"))) == 1
    _one_error_line(capsys, "engnies: no such folder")
    (tmp_path / "a_file").write_text("x")
    assert bench_run.main(_small(tiny_weights, tmp_path / "a_file")) == 1
    _one_error_line(capsys, "is a file")
    assert not out.exists()


def test_run_refuses_files_of_other_weights_than_it_labels(tmp_path, tiny_weights, capsys, monkeypatch):
    """The default model's INT8 file given with a tiny network's weights was timed in the tiny network's rows, and
    --e2e timed the default model through python -m runtime under --weights' name."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    shipped = Path(__file__).resolve().parents[2] / "banet" / "weights" / "banet_default_int8_ort.onnx"
    assert bench_run.main(_small(tiny_weights, tmp_path / "res", "--int8", str(shipped))) == 1
    _one_error_line(capsys, "was exported from other weights than")
    assert bench_run.main(_small(tiny_weights, tmp_path / "res", "--e2e", "64x64")) == 1
    _one_error_line(capsys, "--e2e times the embedded default model")
    assert not (tmp_path / "res").exists()


def test_run_refuses_an_only_pattern_that_matches_no_system(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    argv = _small(tiny_weights, tmp_path / "res")
    argv[argv.index("--only") + 1:argv.index("--only") + 2] = ["torch eager", "onnxruntime fp23"]
    assert bench_run.main(argv) == 1
    err = _one_error_line(capsys, "'onnxruntime fp23' matches no system")
    assert "onnxruntime fp32" in err  # the names it could have meant
    assert not (tmp_path / "res").exists()


def test_run_refuses_sizes_that_do_not_fit_in_memory(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    monkeypatch.setattr(bench_run, "physical_memory", lambda: 10**9)  # 1 GB
    argv = _small(tiny_weights, tmp_path / "res")
    argv[argv.index("--sizes") + 1] = "4000x6000"
    assert bench_run.main(argv) == 1
    _one_error_line(capsys, "4000x6000, batch 1, needs about")


def test_run_keeps_an_existing_results_file_unless_forced(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    out.mkdir()
    stem = results_stem(None, bench_run.machine_name())
    committed = out / f"{stem}.json"
    committed.write_text('{"committed": true}')
    (out / f"{stem}.md").write_text("committed")
    calls = []
    real = bench_run.benchmark
    monkeypatch.setattr(bench_run, "benchmark", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert bench_run.main(_small(tiny_weights, out)) == 1
    _one_error_line(capsys, "exists; pass --force")
    assert committed.read_text() == '{"committed": true}' and not calls  # refused before the run
    # a plot of that name is a committed result too
    committed.unlink()
    (out / f"{stem}.md").unlink()
    (out / f"{stem}_latency_default.png").write_bytes(b"png")
    argv = _small(tiny_weights, out)
    argv.remove("--no-plots")
    assert bench_run.main(argv) == 1 and not calls
    _one_error_line(capsys, "_latency_default.png exists")
    (out / f"{stem}_latency_default.png").unlink()
    committed.write_text('{"committed": true}')
    assert bench_run.main(_small(tiny_weights, out, "--force")) == 0 and calls
    assert "rows" in json.loads(committed.read_text())
    # a labelled run is named apart and leaves the main tables alone
    assert bench_run.main(_small(tiny_weights, out, "--label", "int8-ov")) == 0
    assert (out / f"{results_stem('int8-ov', bench_run.machine_name())}.json").is_file()
    assert "rows" in json.loads(committed.read_text())


def test_run_write_failure_is_one_line_and_leaves_no_partial_file(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import banet.outputs

    def full_disk(partial, path, replace=True, ours=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(banet.outputs, "commit_partial", full_disk)
    out = tmp_path / "res"
    assert bench_run.main(_small(tiny_weights, out)) == 1
    _one_error_line(capsys, "no space left on device writing")
    assert list(out.iterdir()) == []


def test_run_interrupted_says_so_and_writes_nothing(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_run, "benchmark", interrupted)
    out = tmp_path / "res"
    assert bench_run.main(_small(tiny_weights, out)) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert not list(out.glob("*")) if out.exists() else True


@pytest.mark.parametrize("module, kind, argv", [
    (end_to_end, "e2e", ["16x16"]),
    (memory, "memory", ["--sizes", "16x16", "--no-agreement"]),
    (batch_throughput, "batch", ["--photos", "2", "--size", "16x16"]),
    (builders, "builders", ["--rounds", "1"]),
])
def test_other_benchmarks_keep_an_existing_results_file_unless_forced(module, kind, argv, tmp_path, capsys,
                                                                      monkeypatch):
    """Refused before any work: nothing runs (each one's work is replaced by a failure here)."""
    _forbid_work(module, monkeypatch)
    out = tmp_path / "res"
    out.mkdir()
    committed = out / f"{results_stem(kind)}.json"
    committed.write_text("committed")
    assert module.main([*argv, "--output", str(out)]) == 1
    _one_error_line(capsys, "exists; pass --force")
    assert committed.read_text() == "committed"
    (tmp_path / "a_file").write_text("x")
    assert module.main([*argv, "--output", str(tmp_path / "a_file")]) == 1
    _one_error_line(capsys, "is a file")


def test_end_to_end_writes_nothing_when_every_case_failed(tmp_path, capsys, monkeypatch):
    rows = [{"command": "python -m runtime x", "size": "16x16", "wall_s": 0.1, "peak_rss_mb": 1, "exit": 1,
             "error": "error: threads must be a whole number"}]
    monkeypatch.setattr(end_to_end, "end_to_end", lambda *a, **k: rows)
    assert end_to_end.main(["16x16", "--output", str(tmp_path / "res")]) == 1
    _one_error_line(capsys, "every case failed")
    assert not list((tmp_path / "res").glob("*.json"))


def test_batch_throughput_refuses_a_missing_model_before_making_photos(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(batch_throughput, "run", lambda *a, **k: pytest.fail("ran before refusing"))
    assert batch_throughput.main(["--model", str(tmp_path / "nope.onnx"), "--output", str(tmp_path / "res")]) == 1
    _one_error_line(capsys, "nope.onnx: model file not found")
    (tmp_path / "keep").write_text("x")
    assert batch_throughput.main(["--keep", str(tmp_path / "keep"), "--output", str(tmp_path / "res")]) == 1
    _one_error_line(capsys, "--keep")


@pytest.mark.parametrize("module", [bench_run, end_to_end, batch_throughput, memory, builders])
def test_help_explains_force_and_where_results_go(module, capsys):
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    assert "--force" in text and "benchmarks/results" in text


def test_batch_throughput_refuses_photos_that_would_not_fit_the_disk(tmp_path, capsys, monkeypatch):
    """--photos has no upper bound of its own: what bounds it is the disk the photos and outputs go to."""
    monkeypatch.setattr(batch_throughput, "run", lambda *a, **k: pytest.fail("made photos before refusing"))
    assert batch_throughput.main(["--photos", "100000000", "--size", "4000x3000", "--keep", str(tmp_path / "k"),
                                  "--output", str(tmp_path / "res")]) == 1
    _one_error_line(capsys, "GB free")
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("option, values, needle", [
    ("--threads", ["1", "1"], "--threads names 1 more than once"),
    ("--batches", ["1", "4", "1"], "--batches names 1 more than once"),
    ("--sizes", ["16x16", "16x16"], "--sizes names 16x16 more than once"),
])
def test_run_refuses_a_value_given_twice(option, values, needle, tmp_path, tiny_weights, capsys, monkeypatch):
    """Before: ``--threads 1 1`` timed every system twice into rows of the same key, and each row's speed-up over
    PyTorch eager was taken against the other pass's eager time (a ratio across two measurements)."""
    monkeypatch.chdir(tmp_path)
    _no_work(monkeypatch)
    argv = _small(tiny_weights, tmp_path / "res")
    if option in argv:
        start = argv.index(option) + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
        argv[start:end] = values
    else:
        argv += [option, *values]
    assert bench_run.main(argv) == 1
    _one_error_line(capsys, needle)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("module, argv, needle", [
    (memory, ["--sizes", "16x16", "16x16", "--backends", "onnxruntime"], "--sizes names 16x16 more than once"),
    (memory, ["--sizes", "16x16", "--backends", "onnxruntime", "onnxruntime"], "--backends names onnxruntime"),
])
def test_other_benchmarks_refuse_a_value_given_twice(module, argv, needle, tmp_path, capsys, monkeypatch):
    """benchmarks.memory wrote four identical rows for --sizes 16x16 16x16 --backends onnxruntime onnxruntime."""
    monkeypatch.setattr(module, "measure", lambda *a, **k: pytest.fail("measured although refused"), raising=False)
    assert module.main([*argv, "--output", str(tmp_path / "res")]) == 1
    _one_error_line(capsys, needle)
    assert not (tmp_path / "res").exists()
