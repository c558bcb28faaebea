"""Training: the loss falls on a tiny network, and a resumed run continues the same loss curve exactly."""

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from banet.checkpoint import load_checkpoint
from banet.config import BANetConfig
from banet.model import BANet
from training.losses import charbonnier, deblur_loss, fft_l1, harm_penalty
from training.photos import make_training_batch
from training.train import TrainConfig, TrainError, export_weights, learning_rate_factor, train


def _synthetic_photo(seed: int = 0, size: int = 160) -> np.ndarray:
    """A procedurally drawn 'photo' (rectangles, discs, gradients): not a held-out or training photo."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = np.linspace(0, 255, size, dtype=np.uint8)[None, :, None]
    for _ in range(40):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(4, 40)), y + int(rng.integers(4, 40))), color, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 20)), color, -1)
    return img


def _source(config: TrainConfig):
    photos = [_synthetic_photo(0), _synthetic_photo(1)]
    return lambda step: make_training_batch(photos, config.crop, config.batch,
                                            np.random.default_rng([config.seed, step]))


SMOKE = dict(model=BANetConfig(2, 8, 16), steps=40, batch=4, crop=32, warmup=2, save_every=10, lr=2e-3)


def test_losses():
    a = torch.zeros(1, 3, 8, 8)
    assert charbonnier(a, a).item() == pytest.approx(1e-3)
    assert fft_l1(a, a).item() == 0
    b = a + 0.1
    assert deblur_loss(b, a).item() > deblur_loss(a, a).item()


def test_harm_penalty_counts_only_crops_made_worse():
    torch.manual_seed(0)
    target = torch.rand(3, 3, 16, 16)
    blurred = target + 0.05 * torch.randn_like(target)
    improved = target + 0.01 * torch.randn_like(target)
    assert harm_penalty(improved, target, blurred).item() == 0  # every crop better than its input
    worse = improved.clone()
    worse[1] = target[1] + 0.2 * torch.randn_like(target[1])  # one crop made worse than its input
    penalty = harm_penalty(worse, target, blurred)
    excess = (charbonnier(worse[1:2], target[1:2]) - charbonnier(blurred[1:2], target[1:2])).item()
    assert excess > 0 and penalty.item() == pytest.approx(excess / 3, rel=1e-4)
    # its gradient flows into the output only (the input is data), and only through the harmed crop
    out = worse.clone().requires_grad_(True)
    harm_penalty(out, target, blurred.requires_grad_(True)).backward()
    assert out.grad[0].abs().sum() == 0 and out.grad[2].abs().sum() == 0 and out.grad[1].abs().sum() > 0
    assert blurred.grad is None


def test_harm_weight_changes_training_and_is_recorded(tmp_path):
    """The penalty is wired into the step: with an identity-like batch (sharp inputs) it changes the loss."""
    config = TrainConfig(**{**SMOKE, "steps": 10})
    photo = _synthetic_photo(2, 64)[:32, :32].astype(np.float32) / 255
    batch = (np.stack([photo] * 4), np.stack([photo] * 4))  # sharp in, sharp out: any change is harm
    plain = train(config, tmp_path / "plain", batch_source=lambda step: batch, progress=False)
    harmed = train(replace(config, harm_weight=1.0), tmp_path / "harm", batch_source=lambda step: batch,
                   progress=False)
    assert harmed[0]["loss"] > plain[0]["loss"]
    state = torch.load(tmp_path / "harm" / "last.pt", map_location="cpu", weights_only=True)
    saved = TrainConfig.from_dict(json.loads(state["train_config"]))
    assert saved.harm_weight == 1.0
    legacy = config.to_dict()
    del legacy["harm_weight"]  # checkpoints written before the option existed still load
    assert TrainConfig.from_dict(legacy).harm_weight == 0.0


def test_photo_sampling_is_part_of_the_run_and_old_checkpoints_load_as_uniform():
    config = TrainConfig(**SMOKE)
    assert config.sample_by == "photo"
    assert not config.same_run(replace(config, sample_by="area"))
    legacy = config.to_dict()
    del legacy["sample_by"]  # checkpoints written before --sample-by existed sampled photos uniformly
    assert TrainConfig.from_dict(legacy).sample_by == "photo"


def test_learning_rate_schedule():
    config = TrainConfig(steps=1000, warmup=100, final_lr_ratio=0.1)
    assert learning_rate_factor(0, config) == pytest.approx(0.01)
    assert learning_rate_factor(100, config) == pytest.approx(1.0)
    assert learning_rate_factor(1000, config) == pytest.approx(0.1)


def test_smoke_training_loss_falls(tmp_path):
    """A tiny network fitting one fixed batch: the loss must fall clearly within 40 steps."""
    config = TrainConfig(**SMOKE)
    fixed = _source(config)(0)
    history = train(replace(config, lr=5e-3), tmp_path / "run", batch_source=lambda step: fixed, progress=False)
    losses = [entry["loss"] for entry in history]
    assert len(losses) == 4
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.95 * losses[0], losses


def test_resume_continues_the_same_loss_curve(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 30})
    straight = train(config, tmp_path / "a", batch_source=_source(config), progress=False)
    first = train(config, tmp_path / "b", batch_source=_source(config), progress=False, stop_at=20)
    assert [e["step"] for e in first] == [10, 20]
    resumed = train(config, tmp_path / "b", batch_source=_source(config), progress=False)
    assert [e["step"] for e in resumed] == [10, 20, 30]
    for a, b in zip(straight, resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)


def test_resume_refuses_a_different_recipe(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 10})
    train(config, tmp_path / "r", batch_source=_source(config), progress=False)
    other = TrainConfig(**{**SMOKE, "steps": 10, "crop": 48})
    with pytest.raises(ValueError, match="refusing to resume"):
        train(other, tmp_path / "r", batch_source=_source(other), progress=False)


def test_exported_weights_load_with_their_training_record(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 10})
    train(config, tmp_path / "r", batch_source=_source(config), progress=False)
    path = export_weights(tmp_path / "r", tmp_path / "w.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == config.model
    assert loaded.metadata["banet.trained_steps"] == "10"
    assert json.loads(loaded.metadata["banet.train_config"])["crop"] == 32
    with pytest.raises(FileExistsError):
        export_weights(tmp_path / "r", path)
    # safetensors bytes under another kind's name: --export banet/weights/banet_default.onnx --force replaced the
    # shipped ONNX with them
    onnx = tmp_path / "banet_default.onnx"
    onnx.write_bytes(b"the shipped ONNX")
    for name in (onnx, tmp_path / "w.pt", tmp_path / "w"):
        with pytest.raises(TrainError, match=r"--export .*must end in \.safetensors"):
            export_weights(tmp_path / "r", name, overwrite=True)
    assert onnx.read_bytes() == b"the shipped ONNX" and not (tmp_path / "w.pt").exists()


def test_bf16_autocast_training_runs_and_learns(tmp_path):
    config = TrainConfig(**SMOKE)
    fixed = _source(config)(0)
    history = train(replace(config, lr=5e-3), tmp_path / "run", batch_source=lambda step: fixed, progress=False,
                    precision="bf16")
    losses = [entry["loss"] for entry in history]
    assert losses[-1] < 0.95 * losses[0], losses


def test_resume_from_exported_weights_without_optimizer_state(tmp_path):
    """Git keeps only the shipped weights and history.jsonl: a fresh machine resumes this run from them."""
    config = TrainConfig(**{**SMOKE, "steps": 30})
    run = tmp_path / "r"
    train(config, run, batch_source=_source(config), progress=False, stop_at=20)
    weights = export_weights(run, tmp_path / "w.safetensors")
    (run / "last.pt").unlink()
    resumed = train(config, run, batch_source=_source(config), progress=False, init_from=weights)
    assert [e["step"] for e in resumed] == [10, 20, 30]


def test_fine_tune_starts_from_given_weights_at_step_zero(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 10})
    train(config, tmp_path / "base", batch_source=_source(config), progress=False)
    base = export_weights(tmp_path / "base", tmp_path / "base.safetensors")
    tuned = replace(config, recipe="do-no-harm", init_steps=10, lr=1e-9, warmup=1)
    history = train(tuned, tmp_path / "tune", batch_source=_source(tuned), progress=False, init_from=base)
    assert [e["step"] for e in history] == [10]
    out = export_weights(tmp_path / "tune", tmp_path / "tuned.safetensors")
    loaded, start = load_checkpoint(out), load_checkpoint(base)
    assert loaded.metadata["banet.trained_steps"] == "20"
    # lr ~0: the fine-tune starts from (and here stays at) the given weights, not from a fresh initialisation
    for key, value in start.model.state_dict().items():
        assert torch.allclose(value, loaded.model.state_dict()[key], atol=1e-6), key


def test_extending_the_schedule_resumes_from_exported_weights(tmp_path):
    """A longer --steps on resume continues the run (the schedule may move), it does not restart it."""
    config = TrainConfig(**{**SMOKE, "steps": 20})
    run = tmp_path / "r"
    train(config, run, batch_source=_source(config), progress=False)
    weights = export_weights(run, tmp_path / "w.safetensors")
    (run / "last.pt").unlink()
    longer = replace(config, steps=30)
    history = train(longer, run, batch_source=_source(longer), progress=False, init_from=weights)
    assert [e["step"] for e in history] == [10, 20, 30]


def test_fft_weight_is_applied_and_recorded(tmp_path):
    """The FFT term's weight reaches the loss (a larger weight, a larger logged loss from the same start)."""
    config = TrainConfig(**{**SMOKE, "steps": 10})
    light = train(replace(config, fft_weight=0.0), tmp_path / "a", batch_source=_source(config), progress=False)
    heavy = train(replace(config, fft_weight=0.05), tmp_path / "b", batch_source=_source(config), progress=False)
    assert heavy[0]["loss"] > light[0]["loss"] * 1.5
    state = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    assert TrainConfig.from_dict(json.loads(state["train_config"])).fft_weight == 0.05


def test_the_training_evaluation_reports_the_worst_image():
    from training.evaluate import quick_evaluator

    torch.manual_seed(0)
    model = BANet(BANetConfig(1, 8, 16)).eval()
    out = quick_evaluator(3)(model)
    assert set(out) >= {"psnr_gain", "worst_gain", "worst_image", "linear_gain", "linear_worst", "sharp_worst_psnr"}
    assert out["worst_gain"] <= out["psnr_gain"] and out["worst_image"].endswith("_r0c0")


def test_evaluations_run_at_every_eval_step_even_between_saves(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 30, "eval_every": 15})  # saves every 10: 15 is not a save step
    calls = []

    def evaluate(model):
        calls.append(True)
        return {"psnr_gain": 0.0}

    history = train(config, tmp_path / "r", batch_source=_source(config), progress=False, evaluate_fn=evaluate)
    assert [e["step"] for e in history if "psnr_gain" in e] == [15, 30]
    assert [e["step"] for e in history] == [10, 15, 20, 30]
    assert len(calls) == 2


def test_worker_pool_yields_the_same_batches_as_the_training_process():
    from training.train import PhotoBatches, batch_stream

    config = TrainConfig(**{**SMOKE, "recipe": "do-no-harm", "augment": True, "sample_by": "area"})
    source = PhotoBatches([_synthetic_photo(0), _synthetic_photo(1)], config)
    assert source.weights is not None
    expected = [source(step) for step in range(3, 8)]
    for workers in (0, 1, 2):
        stream = batch_stream(source, 3, workers=workers)
        got = [next(stream) for _ in expected]
        stream.close()
        for (b1, s1), (b2, s2) in zip(expected, got):
            assert isinstance(b2, np.ndarray)
            np.testing.assert_array_equal(b1, b2)
            np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(expected[0][0], expected[1][0])
    with pytest.raises(ValueError, match="unknown recipe"):
        PhotoBatches([_synthetic_photo(0)], replace(config, recipe="nope"))


def test_training_with_workers_repeats_the_in_process_loss_curve(tmp_path):
    from training.train import PhotoBatches

    config = TrainConfig(**{**SMOKE, "steps": 20})
    source = PhotoBatches([_synthetic_photo(0), _synthetic_photo(1)], config)
    plain = train(config, tmp_path / "a", batch_source=source, progress=False)
    pooled = train(config, tmp_path / "b", batch_source=source, progress=False, workers=2)
    assert [e["loss"] for e in plain] == pytest.approx([e["loss"] for e in pooled], rel=1e-5)


class _FakeClock:
    """Seconds that pass only when a batch is made: 0.5 s per step, whatever the machine's load."""

    def __init__(self, source):
        self.now, self.source = 0.0, source

    def __call__(self) -> float:
        return self.now

    def batch(self, step):
        self.now += 0.5
        return self.source(step)


def test_time_budget_sizes_the_schedule_to_end_at_the_deadline_and_resume_keeps_it(tmp_path, caplog):
    from training.train import PROBE_SKIP, PROBE_STEPS, decide_total_steps

    config = TrainConfig(**{**SMOKE, "steps": 10_000, "warmup": 30})
    clock = _FakeClock(_source(config))
    probe_end = PROBE_SKIP + PROBE_STEPS
    total = decide_total_steps(probe_end, 2.0, 60 - 0.5 * probe_end)
    assert probe_end < total < 120  # 2 steps/s for the 60 s budget, less the share kept back
    run = tmp_path / "r"
    first = train(config, run, batch_source=clock.batch, progress=False, minutes=1.0, clock=clock, stop_at=60)
    assert first[-1]["step"] == 60
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    stored = TrainConfig.from_dict(json.loads(state["train_config"]))
    assert (stored.steps, stored.minutes) == (total, 1.0)
    # a new session (another machine, another rate) continues the decided schedule to its end
    clock2 = _FakeClock(_source(config))
    history = train(config, run, batch_source=clock2.batch, progress=False, minutes=1.0, clock=clock2)
    assert history[-1]["step"] == total
    floor = config.lr * learning_rate_factor(total - 1, replace(config, steps=total))
    assert history[-1]["lr"] == pytest.approx(floor)
    assert floor < 1.5 * config.lr * config.final_lr_ratio  # the last step of the decay, at its floor
    # a larger --steps does not extend it (the decay has ended): said, with what does, never "give a larger --steps"
    with caplog.at_level("INFO", logger="training.train"):
        again = train(replace(config, steps=total + 500), run, batch_source=_FakeClock(_source(config)).batch,
                      progress=False, clock=_FakeClock(_source(config)))
    assert again[-1]["step"] == total
    assert f"--steps {total + 500} is not used: this run's schedule was decided for 1 minutes" in caplog.text
    assert "start a new run from its exported weights" in caplog.text and "give a larger --steps" not in caplog.text


def test_time_budget_stops_a_slow_session_where_it_is_and_saves(tmp_path):
    config = TrainConfig(**{**SMOKE, "steps": 10_000, "warmup": 30, "save_every": 1000})
    clock = _FakeClock(_source(config))
    history = train(config, tmp_path / "r", batch_source=clock.batch, progress=False, max_minutes=0.1,
                    clock=clock)
    assert history[-1]["step"] == 13  # 6 s at 0.5 s per step: past the limit after step 13, saved there
    assert (tmp_path / "r" / "last.pt").is_file()


@pytest.mark.parametrize("option", ["--minutes", "--max-minutes"])
@pytest.mark.parametrize("value", ["0", "61"])
def test_cli_refuses_sessions_over_an_hour_or_empty(option, value, capsys):
    from training.train import main

    with pytest.raises(SystemExit) as exc:
        main([option, value, "--smoke"])
    assert exc.value.code == 2 and "at most 60" in capsys.readouterr().err


def test_a_budgeted_run_that_falls_behind_replans_its_decay_to_the_deadline(tmp_path):
    """The machine gets 3x slower after the rate was measured: the decay is shortened, continuously, and the
    run still ends at its floor before the deadline instead of being cut off at a high learning rate."""
    config = TrainConfig(**{**SMOKE, "steps": 10_000, "warmup": 30})
    source = _source(config)
    clock = _FakeClock(source)

    def slowing(step):
        clock.now += 0.5 if step < 40 else 1.5
        return source(step)

    history = train(config, tmp_path / "r", batch_source=slowing, progress=False, minutes=1.0, clock=clock)
    state = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=True)
    stored = TrainConfig.from_dict(json.loads(state["train_config"]))
    assert stored.replan_step is not None and 0 < stored.replan_factor < 1
    assert history[-1]["step"] == stored.steps and clock.now <= 60
    assert history[-1]["lr"] == pytest.approx(config.lr * learning_rate_factor(stored.steps - 1, stored))
    assert learning_rate_factor(stored.steps, stored) == pytest.approx(config.final_lr_ratio)  # floor at the end
    lrs = [e["lr"] for e in history if e["step"] >= stored.replan_step]
    assert len(lrs) >= 2 and all(b < a for a, b in zip(lrs, lrs[1:]))
    # continuous at the re-plan: the factor there is the one the old schedule had
    before = replace(stored, replan_step=None, steps=decide_total_steps_for(stored))
    assert learning_rate_factor(stored.replan_step, stored) == pytest.approx(
        learning_rate_factor(stored.replan_step, before))


def test_a_budgeted_run_lengthens_its_decay_again_when_the_machine_is_free(tmp_path, caplog):
    """A slow spell (other work on the machine) shortens the decay; when the rate comes back the decay is
    lengthened again, continuously, and still ends at its floor before the deadline."""
    config = TrainConfig(**{**SMOKE, "steps": 10_000, "warmup": 30})
    source = _source(config)
    clock = _FakeClock(source)

    def spell(step):
        clock.now += 1.5 if 30 <= step < 50 else 0.5
        return source(step)

    with caplog.at_level(logging.INFO, logger="training.train"):
        history = train(config, tmp_path / "r", batch_source=spell, progress=False, minutes=2.0, clock=clock)
    replans = [r.getMessage() for r in caplog.records if "schedule at" in r.getMessage()]
    assert [m.split()[0] for m in replans][:1] == ["behind"] and replans[-1].startswith("ahead of"), replans
    state = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=True)
    stored = TrainConfig.from_dict(json.loads(state["train_config"]))
    assert f"ends at step {stored.steps} " in replans[-1]
    assert history[-1]["step"] == stored.steps and clock.now <= 120
    assert learning_rate_factor(stored.steps, stored) == pytest.approx(config.final_lr_ratio)
    lrs = [e["lr"] for e in history if e["step"] >= 40]
    assert len(lrs) >= 3 and all(b <= a for a, b in zip(lrs, lrs[1:]))  # never jumps up at a re-plan


def decide_total_steps_for(stored: TrainConfig) -> int:
    """The total decided after the probe of the test above (0.5 s per step, 60 s budget)."""
    from training.train import PROBE_SKIP, PROBE_STEPS, decide_total_steps

    probe_end = PROBE_SKIP + PROBE_STEPS
    return decide_total_steps(probe_end, 2.0, 60 - 0.5 * probe_end)


def test_train_step_clips_gradients_as_training_does():
    """The one step both train() and training.step_rate run: gradients are clipped to grad_clip."""
    from training.train import to_network, train_step

    torch.manual_seed(0)
    config = TrainConfig(**{**SMOKE, "grad_clip": 1e-3})
    model = BANet(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    blurred, sharp = _source(config)(0)
    cpu = torch.device("cpu")
    loss = train_step(model, optimizer, to_network(blurred, cpu), to_network(sharp, cpu), config)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert torch.isfinite(loss) and float(norm) <= 1e-3 * 1.001


def test_probe_waits_for_the_prefetched_batches_and_a_short_provisional_schedule_is_still_sized(tmp_path):
    from training.train import PREFETCH, PROBE_SKIP, PROBE_STEPS, probe_window

    assert probe_window(0, 0) == (PROBE_SKIP, PROBE_SKIP + PROBE_STEPS)
    assert probe_window(7, 2) == (7 + PROBE_SKIP + 2 * PREFETCH, 7 + PROBE_SKIP + 2 * PREFETCH + PROBE_STEPS)
    config = TrainConfig(**{**SMOKE, "steps": 10, "warmup": 30})  # provisional --steps below the probe
    clock = _FakeClock(_source(config))
    history = train(config, tmp_path / "r", batch_source=clock.batch, progress=False, minutes=1.0, clock=clock)
    state = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=True)
    stored = TrainConfig.from_dict(json.loads(state["train_config"]))
    assert stored.minutes == 1.0 and stored.steps > PROBE_SKIP + PROBE_STEPS + 1
    assert history[-1]["step"] == stored.steps
    assert history[0]["session"] == {"photos": None, "workers": 0}
    assert all("session" not in e for e in history[1:])


def test_a_schedule_that_ends_inside_the_warm_up_is_said(tmp_path, caplog):
    """--steps 50 with the default --warmup 200 ended at 25% of --lr without a word: no decay at all."""
    config = TrainConfig(**{**SMOKE, "steps": 4, "warmup": 8})
    with caplog.at_level("WARNING", logger="training.train"):
        train(config, tmp_path / "r", batch_source=_source(config), progress=False)
    assert "--steps 4 ends inside the warm-up (--warmup 8): the learning rate never decays; it ends at 50% of --lr" \
        in caplog.text
