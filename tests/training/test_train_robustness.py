"""Training and evaluation as a user gets them wrong: damaged run folders, nonsense options, full disks, Ctrl-C.

Every refusal is one ``error:`` line (exit 1, or 2 for a bad option) before any work, nothing the user has is
overwritten without ``--force`` (a run's history, its ``last.pt``, earlier evaluation results), and a save that
fails keeps the previous checkpoint with no half file left. Tiny network and fixed batches: seconds in all.
"""

import errno
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.model import BANet
from training import train as T
from training.train import TrainConfig, TrainError, TrainingInterrupted, export_weights, train

TINY = dict(model=BANetConfig(1, 8, 16), steps=10, batch=2, crop=32, warmup=2, save_every=10, lr=1e-3, eval_every=1000)


def _batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded batch (the data pipeline is not under test here)."""
    rng = np.random.default_rng(0)
    sharp = rng.random((2, 32, 32, 3), dtype=np.float32)
    return (0.5 * sharp + 0.5 * sharp.mean(axis=(1, 2), keepdims=True)).astype(np.float32), sharp


def _train(run: Path, **kwargs) -> list[dict]:
    config = kwargs.pop("config", TrainConfig(**TINY))
    return train(config, run, batch_source=kwargs.pop("batch_source", _batch), progress=False, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 10-step run (last.pt + history.jsonl), copied by the tests that damage it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    _train(run)
    return run


def _copy(run: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for name in ("last.pt", "history.jsonl"):
        (to / name).write_bytes((run / name).read_bytes())
    return to


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _saved_step(run: Path) -> int:
    return int(torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".tmp")))


@pytest.fixture
def no_training(monkeypatch):
    """CLI tests that must stop before training: training (or the held-out evaluator) would be a failure."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command went on to train")

    monkeypatch.setattr(T, "train", refuse)
    monkeypatch.setattr("training.evaluate.quick_evaluator", lambda count: None)


# -- a damaged or foreign last.pt -------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "state_dict", "folder", "bad_record"])
def test_a_damaged_last_pt_is_one_line_and_kept(damage, trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    state = run / "last.pt"
    if damage == "empty":
        state.write_bytes(b"")
    elif damage == "truncated":  # a copy cut short, or a run killed mid-write before saves were atomic
        state.write_bytes(state.read_bytes()[:2000])
    elif damage == "random":
        state.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "state_dict":  # the authors' or a bare torch.save(model.state_dict()) under the run's name
        torch.save(BANet(TINY["model"]).state_dict(), state)
    elif damage == "folder":
        state.unlink()
        state.mkdir()
    else:  # a training state whose recorded configuration is not readable
        saved = torch.load(state, weights_only=True)
        torch.save({**saved, "train_config": "{not json"}, state)
    before = state.read_bytes() if state.is_file() else None
    with pytest.raises(TrainError, match="last.pt") as exc:
        _train(run)
    message = str(exc.value)
    assert "\n" not in message and "move it away" in message and len(message) < 400, message
    if before is not None:
        assert state.read_bytes() == before  # never replaced by a new run


def test_a_damaged_last_pt_on_the_command_line_is_one_line(trained, tmp_path, capsys, no_training):
    run = _copy(trained, tmp_path / "run")
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    assert T.main(["--run", str(run), "--steps", "20"]) == 1
    assert "cut short or corrupt" in _one_line_error(capsys.readouterr().err)
    assert T.main(["--run", str(run), "--export", str(tmp_path / "w.safetensors")]) == 1
    assert "cut short or corrupt" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "w.safetensors").exists()


def test_a_last_pt_cut_anywhere_is_named_as_cut_short(tmp_path):
    """torch's zip reader fails on some cut-short files with OSError(EINVAL), which was reported as an I/O error
    ("cannot read last.pt: Invalid argument") without the fix (26 of 33 lengths of this file)."""
    full = tmp_path / "full.pt"
    torch.save({"w": torch.arange(20000, dtype=torch.float32)}, full)
    data = full.read_bytes()
    for length in range(1000, len(data), 2500):
        (tmp_path / "last.pt").write_bytes(data[:length])
        with pytest.raises(TrainError, match="is empty, cut short or corrupt"):
            T.load_state(tmp_path / "last.pt")


def test_resuming_another_network_names_what_differs(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    wider = TrainConfig(**{**TINY, "model": BANetConfig(1, 8, 32), "crop": 48})
    with pytest.raises(TrainError, match="refusing to resume") as exc:
        _train(run, config=wider)
    message = str(exc.value)
    assert "widths 8/16 in the run, BANet stack-1, widths 8/32 given" in message and "crop 32 in the run, 48 given" \
        in message and "TrainConfig(" not in message, message


# -- options left out on resume, options changed on resume ------------------------------------------------------
def test_resuming_with_the_plain_command_keeps_the_runs_own_options(trained, tmp_path, monkeypatch):
    """Before, every option left out took its default: the run was refused (--crop 96 != 32), or, with the same
    crop, its --lr, --warmup and loss weights were silently reset for the rest of the run."""
    run = _copy(trained, tmp_path / "run")
    seen = {}
    monkeypatch.setattr(T, "train", lambda config, *args, **kwargs: seen.setdefault("config", config))
    monkeypatch.setattr("training.evaluate.quick_evaluator", lambda count: None)
    assert T.main(["--run", str(run), "--steps", "20"]) == 0
    stored = TrainConfig(**TINY)
    assert seen["config"] == replace(stored, steps=20)
    seen.clear()
    assert T.main(["--run", str(run), "--lr", "5e-4", "--widths", "8,16"]) == 0
    assert seen["config"] == replace(stored, lr=5e-4)


def test_a_resume_that_changes_the_schedule_or_loss_records_it(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    history = _train(run, config=TrainConfig(**{**TINY, "steps": 20, "fft_weight": 0.02}))
    session = history[-1]["session"]
    assert session["changed"] == {"steps": [10, 20], "fft_weight": [0.01, 0.02]}
    assert json.loads((run / "history.jsonl").read_text().splitlines()[-1])["session"]["changed"] == \
        session["changed"]


# -- the run folder ---------------------------------------------------------------------------------------------
def test_a_run_folder_that_is_a_file_is_refused(tmp_path):
    run = tmp_path / "run"
    run.write_text("my notes")
    with pytest.raises(TrainError, match="is a file, not a run folder"):
        _train(run)
    assert run.read_text() == "my notes"


def test_an_unwritable_run_folder_is_refused_before_any_step(tmp_path, monkeypatch):
    """Root ignores permissions, so the check's answer is what is faked here; before, the first save (minutes
    or hours in) failed with a PermissionError traceback and the steps were lost."""
    steps = []
    monkeypatch.setattr(T.os, "access", lambda path, mode: False)
    with pytest.raises(TrainError, match="not writable"):
        _train(tmp_path / "run", batch_source=lambda step: steps.append(step) or _batch(step))
    assert steps == []


def test_a_second_session_on_the_same_run_is_refused(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    before = (run / "last.pt").read_bytes()
    with T.run_lock(run):  # another terminal training the same run
        with pytest.raises(TrainError, match="another training session is running"):
            _train(run, config=TrainConfig(**{**TINY, "steps": 20}))
    assert (run / "last.pt").read_bytes() == before
    assert _train(run, config=TrainConfig(**{**TINY, "steps": 20}))[-1]["step"] == 20  # the lock is released


def test_a_new_run_never_starts_over_an_existing_history(trained, tmp_path):
    """A run whose last.pt is gone (git keeps only history.jsonl and the exported weights): starting it again
    from scratch, or fine-tuning into its folder, replaced the committed history at the first save."""
    run = _copy(trained, tmp_path / "run")
    weights = export_weights(run, tmp_path / "w.safetensors")
    (run / "last.pt").unlink()
    history = (run / "history.jsonl").read_bytes()
    with pytest.raises(TrainError, match="holds 1 logged step"):
        _train(run)
    other = TrainConfig(**{**TINY, "recipe": "do-no-harm"})  # not this run: a fine-tune from step 0
    with pytest.raises(TrainError, match="--init-from"):
        _train(run, config=other, init_from=weights)
    assert (run / "history.jsonl").read_bytes() == history
    resumed = _train(run, config=TrainConfig(**{**TINY, "steps": 20}), init_from=weights)
    assert [e["step"] for e in resumed] == [10, 20]


def test_a_history_cut_short_is_dropped_and_garbage_is_named(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    weights = export_weights(run, tmp_path / "w.safetensors")
    (run / "last.pt").unlink()
    good = (run / "history.jsonl").read_text()
    (run / "history.jsonl").write_text(good + '{"step": 20, "loss": 0.0')  # killed while writing a line
    resumed = _train(run, config=TrainConfig(**{**TINY, "steps": 20}), init_from=weights)
    assert [e["step"] for e in resumed] == [10, 20]
    (run / "last.pt").unlink()
    (run / "history.jsonl").write_text(good + "garbage\n" + good)
    with pytest.raises(TrainError, match=r"history.jsonl: line 2 is not a history entry"):
        _train(run, config=TrainConfig(**{**TINY, "steps": 20}), init_from=weights)
    (run / "history.jsonl").write_text(good + '{"loss": 1}\n')  # an entry without its step
    with pytest.raises(TrainError, match="line 2"):
        _train(run, config=TrainConfig(**{**TINY, "steps": 20}), init_from=weights)


# -- saves that fail: a full disk, Ctrl-C ----------------------------------------------------------------------
def _fail_fsync(monkeypatch, error: BaseException) -> None:
    """The data is written, then the disk reports it full (or Ctrl-C lands) before it is durable."""
    def fsync(fd):
        raise error

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_keeps_the_previous_checkpoint_whole(error, trained, tmp_path, monkeypatch):
    run = _copy(trained, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("last.pt", "history.jsonl")}
    _fail_fsync(monkeypatch, error)
    expected = TrainError if isinstance(error, OSError) else TrainingInterrupted
    with pytest.raises(expected, match="no space left on device" if expected is TrainError else "holds step 10"):
        _train(run, config=TrainConfig(**{**TINY, "steps": 20}))
    monkeypatch.undo()
    assert {name: (run / name).read_bytes() for name in before} == before
    assert _leftovers(run) == []
    assert _saved_step(run) == 10


def test_ctrl_c_while_training_says_which_step_the_run_resumes_from(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path / "run")

    def interrupted(step):
        if step == 14:
            raise KeyboardInterrupt
        return _batch(step)

    with pytest.raises(TrainingInterrupted, match=r"at step 14: .*last.pt holds step 10; run the same command"):
        _train(run, config=TrainConfig(**{**TINY, "steps": 20}), batch_source=interrupted)
    assert _saved_step(run) == 10 and _leftovers(run) == []

    def ctrl_c(*args, **kwargs):
        raise TrainingInterrupted(f"interrupted (Ctrl-C) at step 14: {run}/last.pt holds step 10; run the same "
                                  "command to resume")

    monkeypatch.setattr(T, "train", ctrl_c)
    monkeypatch.setattr("training.evaluate.quick_evaluator", lambda count: None)
    assert T.main(["--run", str(run)]) == 130
    err = capsys.readouterr().err
    assert "holds step 10" in err and "Traceback" not in err


# -- exporting --------------------------------------------------------------------------------------------------
def test_export_never_writes_over_the_runs_own_files(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    before = (run / "last.pt").read_bytes()
    for target in ("last.pt", "history.jsonl"):
        assert T.main(["--run", str(run), "--export", str(run / target), "--force"]) == 1
        assert "refused even with --force" in _one_line_error(capsys.readouterr().err)
    assert (run / "last.pt").read_bytes() == before
    assert T.main(["--run", str(run), "--export", str(tmp_path)]) == 1  # a folder
    assert "is a directory" in _one_line_error(capsys.readouterr().err)
    assert T.main(["--run", str(tmp_path / "none"), "--export", str(tmp_path / "w.safetensors")]) == 1
    assert "no training state to export" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "none").exists()
    assert T.main(["--run", str(run), "--export", str(tmp_path / "w.safetensors")]) == 0
    assert T.main(["--run", str(run), "--export", str(tmp_path / "w.safetensors")]) == 1
    assert "pass --force" in _one_line_error(capsys.readouterr().err)


def test_an_export_that_fails_leaves_the_previous_file_and_no_partial(trained, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out" / "w.safetensors"
    export_weights(trained, output)
    before = output.read_bytes()
    _fail_fsync(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert T.main(["--run", str(trained), "--export", str(output), "--force"]) == 1
    monkeypatch.undo()
    assert "no space left on device" in _one_line_error(capsys.readouterr().err)
    assert output.read_bytes() == before and _leftovers(output.parent) == []


# -- --init-from ------------------------------------------------------------------------------------------------
def test_init_from_a_missing_or_foreign_file_is_one_line_before_any_work(tmp_path, capsys, no_training):
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x04onnx")
    wide = BANet(BANetConfig(2, 8, 32))
    wide_file = tmp_path / "wide.pth"
    torch.save({f"module.{k}": v for k, v in wide.state_dict().items()}, wide_file)  # the authors' layout
    cases = {tmp_path / "missing.pt": "not found", text: "not a PyTorch checkpoint", onnx: "is an ONNX model",
             wide_file: "it holds BANet stack-2, widths 8/32: train that network with --num-bams 2 --widths 8,32"}
    for path, needle in cases.items():
        run = tmp_path / f"run_{path.stem}"
        assert T.main(["--run", str(run), "--num-bams", "1", "--widths", "8,16", "--init-from", str(path)]) == 1
        assert needle in _one_line_error(capsys.readouterr().err)
        assert not run.exists()  # refused before the run folder was made


def test_init_from_fitting_weights_still_fine_tunes(tmp_path):
    weights = save_checkpoint(BANet(TINY["model"]), tmp_path / "w.safetensors")
    assert T._steps_before_run(weights, TrainConfig(**TINY)) == 0


# -- nonsense numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("option", "value"), [
    ("--steps", "0"), ("--steps", "-3"), ("--batch", "0"), ("--crop", "0"), ("--crop", "7"), ("--crop", "31"),
    ("--lr", "-0.001"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--eval-every", "0"),
    ("--eval-images", "0"), ("--warmup", "-1"), ("--seed", "-1"), ("--harm-weight", "-1"), ("--fft-weight", "nan"),
    ("--workers", "-2"), ("--threads", "-1"), ("--threads", "0"), ("--num-bams", "0"), ("--widths", "8,15"),
    ("--minutes", "nan"), ("--minutes", "-5"), ("--max-minutes", "90"), ("--steps", "ten")])
def test_nonsense_numbers_are_refused_before_any_work(option, value, tmp_path, capsys, no_training):
    with pytest.raises(SystemExit) as exc:
        T.main(["--run", str(tmp_path / "run"), option, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and option in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_workers_are_bounded_by_the_cpus_and_0_stays_in_process(tmp_path, capsys, monkeypatch, no_training):
    """Before, any --workers was taken: 100000 started that many processes, each with its own copy of the
    decoded photos. Now at most the CPUs this process may use, refused by argparse with the reason."""
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: set(range(4)))  # a 4-CPU share of the machine
    run = tmp_path / "run"
    for value in ("5", "100000"):
        with pytest.raises(SystemExit) as exc:
            T.main(["--run", str(run), "--workers", value])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "--workers" in lines[0] and "at most 4" in lines[0] and "its own copy of the decoded photos" in \
            lines[0], lines[0]
    assert not run.exists()
    seen = []
    monkeypatch.setattr(T, "train", lambda config, run_dir, **kwargs: seen.append(kwargs["workers"]))
    for value in ("0", "4"):
        assert T.main(["--run", str(run), "--workers", value]) == 0
    assert seen == [0, 4]  # 0: batches made in the training process, as before


def test_threads_beyond_the_cpus_are_refused(tmp_path, capsys, monkeypatch, no_training):
    """torch.set_num_threads(100000) was accepted, and the first parallel operation then crashed the process
    (a segmentation fault, no message at all)."""
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: set(range(4)))  # a 4-CPU share of the machine
    monkeypatch.setattr(T.torch, "set_num_threads", lambda n: pytest.fail(f"set {n} threads"))
    with pytest.raises(SystemExit) as exc:
        T.main(["--run", str(tmp_path / "run"), "--threads", "100000"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--threads" in err and "at most 4" in err and "Traceback" not in err, err


# -- precision ----------------------------------------------------------------------------------------------------
def test_fp16_off_cuda_is_refused_in_one_line_naming_bf16_and_fp32(tmp_path, capsys, no_training):
    """Before, fp16 on a CPU trained under autocast with torch.amp.GradScaler("cuda"), which disables itself off
    CUDA (a warning only): the loss was never scaled, so small gradients underflowed to zero in fp16, and a CPU
    without fp16 arithmetic ran it slower than fp32 (bf16 needs no scaler and is the fast CPU choice)."""
    run = tmp_path / "run"
    with pytest.raises(TrainError, match=r"--precision fp16 is for CUDA GPUs.*bf16.*fp32"):
        _train(run, device="cpu", precision="fp16")
    assert not run.exists()  # refused before the run folder is made
    assert T.main(["--run", str(run), "--device", "cpu", "--precision", "fp16"]) == 1
    assert "use --precision bf16" in _one_line_error(capsys.readouterr().err)
    assert not run.exists()


def test_bf16_and_fp32_on_a_cpu_train_without_a_loss_scaler(tmp_path, monkeypatch):
    scalers = []
    real = T.train_step
    monkeypatch.setattr(T, "train_step", lambda *args: scalers.append(args[-1]) or real(*args))
    for precision in ("bf16", "fp32"):
        history = _train(tmp_path / precision, device="cpu", precision=precision)
        assert history[-1]["step"] == 10 and np.isfinite(history[-1]["loss"])
    assert scalers == [None] * 20
    assert T.grad_scaler(torch.device("cpu"), torch.bfloat16) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_trains_with_an_enabled_loss_scaler(tmp_path, monkeypatch):
    scalers = []
    real = T.train_step
    monkeypatch.setattr(T, "train_step", lambda *args: scalers.append(args[-1]) or real(*args))
    history = _train(tmp_path / "run", device="cuda", precision="fp16")
    assert history[-1]["step"] == 10 and np.isfinite(history[-1]["loss"])
    assert len(scalers) == 10 and all(s is not None and s.is_enabled() for s in scalers)
    assert scalers[0].get_scale() > 1  # the loss is scaled (65536 to start; backed off only on overflow)


def test_a_cuda_device_this_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(T.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainError, match=r"--device cuda:3: this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        T.pick_device("cuda:3")
    assert T.pick_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize(("device", "needle"), [("gpu", "is not a device"), ("cuda", "CUDA is not available")])
def test_a_wrong_device_is_one_line(device, needle, tmp_path, capsys, no_training):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert T.main(["--run", str(tmp_path / "run"), "--device", device]) == 1
    assert needle in _one_line_error(capsys.readouterr().err)


def test_no_training_photos_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BANET_PHOTO_ROOT", str(tmp_path))
    monkeypatch.setattr("training.photos.photo_roots", lambda: [tmp_path])
    monkeypatch.setattr("training.evaluate.quick_evaluator", lambda count: None)
    args = ["--run", str(tmp_path / "run"), "--num-bams", "1", "--widths", "8,16", "--crop", "32", "--batch", "2"]
    assert T.main(args) == 1
    assert "get_photos" in _one_line_error(capsys.readouterr().err)


# -- training.evaluate --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(BANet(BANetConfig(1, 8, 16)), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def test_evaluate_never_overwrites_earlier_results_without_force(tiny_weights, tmp_path, capsys):
    from training.evaluate import main as evaluate

    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    assert evaluate(["--weights", str(tiny_weights), "--output", str(out), "--limit", "1"]) == 1
    assert "metrics.json exists; pass --force" in _one_line_error(capsys.readouterr().err)
    assert (out / "metrics.json").read_text() == '{"earlier": true}'
    (out / "train_gap.json").write_text("{}")
    assert evaluate(["--weights", str(tiny_weights), "--output", str(out), "--train-gap"]) == 1
    assert "train_gap.json exists" in _one_line_error(capsys.readouterr().err)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert evaluate(["--weights", str(tiny_weights), "--output", str(afile), "--limit", "1"]) == 1
    assert "is a file" in _one_line_error(capsys.readouterr().err)
    assert evaluate(["--weights", str(out / "metrics.json"), "--output", str(out), "--force"]) == 1
    assert "metrics.json" in _one_line_error(capsys.readouterr().err)  # not a checkpoint: refused as one
    assert (out / "metrics.json").read_text() == '{"earlier": true}'
    shutil.copyfile(tiny_weights, out / "metrics.json")  # a real checkpoint where an output goes
    assert evaluate(["--weights", str(out / "metrics.json"), "--output", str(out), "--force"]) == 1
    assert "refused even with --force" in _one_line_error(capsys.readouterr().err)
    assert (out / "metrics.json").read_bytes() == tiny_weights.read_bytes()
    (out / "metrics.json").write_text('{"earlier": true}')
    assert evaluate(["--weights", str(tiny_weights), "--output", str(out), "--limit", "1", "--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["dim_2"] == 16
    assert (out / "clock_motion.png").stat().st_size > 0 and _leftovers(out) == []


def test_a_refused_evaluation_makes_no_output_folder(tmp_path, capsys):
    """A checkpoint that does not load was refused after --output had been made: an empty folder stayed."""
    from training.evaluate import main as evaluate

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert evaluate(["--weights", str(bad), "--output", str(tmp_path / "new" / "eval")]) == 1
    assert "bad.safetensors" in _one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_evaluate_refreshes_its_own_default_folder(tiny_weights, tmp_path, monkeypatch):
    """out/eval is the command's own folder, as out/drift is calibration.drift's: the README's main job reruns."""
    from training.evaluate import main as evaluate

    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert evaluate(["--weights", str(tiny_weights), "--limit", "1"]) == 0
    assert json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())["config"]["dim_2"] == 16


def test_evaluate_names_an_onnx_given_as_weights(tmp_path, capsys):
    from training.evaluate import main as evaluate

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x04onnx")
    assert evaluate(["--weights", str(onnx), "--output", str(tmp_path / "eval")]) == 1
    assert "is an ONNX model, not PyTorch weights" in _one_line_error(capsys.readouterr().err)


def test_smoke_runs_never_use_the_default_models_committed_run(tmp_path, monkeypatch, capsys):
    from training.train import main

    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "training" / "runs" / "default" / "history.jsonl"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"step": 10, "loss": 0.1}\n')
    assert main(["--smoke"]) in (0, 1)  # 1 where no training photos are installed
    # before: --smoke trained in training/runs/default, over the default model's committed history (then refused)
    assert "logged step" not in capsys.readouterr().err
    assert committed.read_text() == '{"step": 10, "loss": 0.1}\n'


# -- grow, interpolate, evaluate: weights that cannot be used ------------------------------------------------------
def _bad_weights(tmp_path: Path) -> dict[Path, str]:
    """Files given as weights by mistake, and what the checkpoint reader's one line says about each."""
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x04onnx")
    other = tmp_path / "other.pth"  # another architecture's state_dict
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, other)
    return {tmp_path / "missing.safetensors": "checkpoint file not found", text: "not a PyTorch checkpoint",
            onnx: "is an ONNX model", other: "not a BANet state_dict", tmp_path: "not a file"}


def test_grow_with_weights_it_cannot_use_is_one_line(tiny_weights, tmp_path, capsys):
    """Before: the checkpoint reader's exception (or widen's ValueError for a narrower --width) as a traceback."""
    from training import grow

    out = tmp_path / "grown.safetensors"
    cases = {**_bad_weights(tmp_path), tiny_weights: "narrower than"}  # another width: the 8/16 network to 8
    for path, needle in cases.items():
        width = "8" if path == tiny_weights else "24"
        assert grow.main(["--weights", str(path), "--width", width, "--output", str(out)]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert needle in line and line.startswith(("error: --weights", "error: --width")), line
        assert not out.exists()
    for width in ("7", "0", "x"):  # odd, too small, not a number: argparse, before the weights are read
        with pytest.raises(SystemExit) as exc:
            grow.main(["--weights", str(tiny_weights), "--width", width, "--output", str(out)])
        assert exc.value.code == 2 and "--width" in capsys.readouterr().err
    assert grow.main(["--weights", str(tiny_weights), "--width", "24", "--output", str(out)]) == 0


def test_grow_and_interpolate_name_an_output_they_cannot_write(tiny_weights, tmp_path, capsys):
    from training import grow, interpolate

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "w.safetensors"  # its folder is a file
    assert grow.main(["--weights", str(tiny_weights), "--width", "24", "--output", str(out)]) == 1
    assert "cannot write" in _one_line_error(capsys.readouterr().err)
    assert interpolate.main(["--base", str(tiny_weights), "--tuned", str(tiny_weights), "--alpha", "0.5",
                             "--output", str(out)]) == 1
    assert "cannot write" in _one_line_error(capsys.readouterr().err)


def test_interpolate_with_weights_it_cannot_use_is_one_line(tiny_weights, tmp_path, capsys):
    """Before: a usage message with exit 2 (as for a mistyped option) for a file that is not usable weights."""
    from training import interpolate

    out = tmp_path / "blend.safetensors"
    wide = save_checkpoint(BANet(BANetConfig(1, 8, 32)), tmp_path / "wide.safetensors")
    cases = {**_bad_weights(tmp_path), wide: "the networks must have the same shape"}
    for path, needle in cases.items():
        for option in ("--base", "--tuned"):
            other = "--tuned" if option == "--base" else "--base"
            assert interpolate.main([option, str(path), other, str(tiny_weights), "--alpha", "0.5",
                                     "--output", str(out)]) == 1
            line = _one_line_error(capsys.readouterr().err)
            assert needle in line, line
            assert not out.exists()


def test_evaluate_with_weights_it_cannot_use_is_one_line(tmp_path, capsys):
    from training.evaluate import main as evaluate

    for path, needle in _bad_weights(tmp_path).items():
        assert evaluate(["--weights", str(path), "--output", str(tmp_path / "eval")]) == 1
        assert needle in _one_line_error(capsys.readouterr().err)


# -- a batch that cannot fit in memory --------------------------------------------------------------------------
def test_a_batch_and_crop_that_cannot_fit_in_memory_are_one_line_before_any_work(tmp_path, capsys, monkeypatch,
                                                                                  no_training):
    """Before: ``--batch 100000`` or ``--crop 20000`` was taken; the run decoded every photo, then swapped or was
    killed allocating the first batch (hundreds of GB)."""
    monkeypatch.setattr(T, "physical_memory", lambda: 8 * 10 ** 9, raising=False)  # an 8 GB machine
    assert T.main(["--run", str(tmp_path / "run"), "--batch", "100000", "--crop", "96"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "--batch 100000 x --crop 96" in line and "8 GB" in line, line
    assert T.main(["--run", str(tmp_path / "run"), "--crop", "20000", "--batch", "1"]) == 1
    assert "--crop 20000" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainError, match="smaller --batch or --crop"):
        train(TrainConfig(**{**TINY, "batch": 10 ** 7}), tmp_path / "api", batch_source=_batch, progress=False)
    assert not (tmp_path / "api").exists()
    T.check_memory(TrainConfig(batch=8, crop=192))  # the documented runs fit


def test_step_rate_refuses_a_batch_that_cannot_fit_before_decoding_photos(capsys, monkeypatch):
    from training import step_rate

    monkeypatch.setattr(T, "physical_memory", lambda: 8 * 10 ** 9, raising=False)
    monkeypatch.setattr("training.photos.load_training_photos",
                        lambda *a, **k: pytest.fail("decoded the photos"))
    with pytest.raises(SystemExit) as exit_info:
        step_rate.main(["--batch", "100000", "--workers", "0", "--device", "cpu", "--precision", "fp32"])
    assert exit_info.value.code == 1 and "smaller --batch or --crop" in capsys.readouterr().err


def test_sigterm_while_training_stops_as_ctrl_c_does_with_143(trained, tmp_path, monkeypatch, capsys):
    """SIGTERM (timeout, a batch scheduler) killed the run without a word; it now stops as Ctrl-C does, saying which
    step last.pt holds, exit 143. The signal itself becomes Terminated in runtime.stop_signals (tested there and in
    a subprocess): a real SIGTERM is not sent to this test process, where a library started by earlier tests (Ray)
    may have taken the signal over."""
    import signal

    from runtime.stop_signals import Terminated

    run = _copy(trained, tmp_path / "run")

    def terminated(step):
        if step == 14:
            raise Terminated(signal.SIGTERM)  # what the handler raises
        return _batch(step)

    with pytest.raises(TrainingInterrupted, match=r"terminated \(SIGTERM\) at step 14: .*holds step 10") as info:
        _train(run, config=TrainConfig(**{**TINY, "steps": 20}), batch_source=terminated)
    assert info.value.exit_status == 143 and _saved_step(run) == 10 and _leftovers(run) == []

    def sigterm(*args, **kwargs):
        raise TrainingInterrupted(f"terminated (SIGTERM) at step 14: {run}/last.pt holds step 10", 143)

    monkeypatch.setattr(T, "train", sigterm)
    monkeypatch.setattr("training.evaluate.quick_evaluator", lambda count: None)
    assert T.main(["--run", str(run)]) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err


def test_export_refuses_training_options_it_would_ignore(tmp_path, capsys):
    """``--export w.safetensors --steps 5000`` exported the weights as they were, the --steps ignored without a word."""
    with pytest.raises(SystemExit) as stopped:
        T.main(["--run", str(tmp_path / "r"), "--export", str(tmp_path / "w.safetensors"), "--steps", "5000",
                "--lr", "1e-4"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--steps, --lr would be ignored" in err
    assert T.main(["--run", str(tmp_path / "r"), "--export", str(tmp_path / "w.safetensors")]) == 1  # no run there
    assert "has no training state to export" in capsys.readouterr().err


def test_sigterm_before_the_first_step_is_one_line(tmp_path, monkeypatch, capsys):
    """SIGTERM while the run was starting printed only "15" (str of the Terminated exception)."""
    import signal

    from runtime.stop_signals import Terminated

    def starting(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(T, "_run", starting)
    assert T.main(["--run", str(tmp_path / "r")]) == 143
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM): the run resumes from its last save"
