"""The quality-per-FLOP study: a tiny candidate trains, is measured, and lands in a readable table."""

import numpy as np

from banet.config import BANetConfig
from tests.training.test_train import _source, _synthetic_photo
from training.config_study import CANDIDATES, gflops_256, output_paths, run_name, study_candidate, to_markdown
from training.train import TrainConfig


def test_candidates_cover_depth_and_width_around_the_default():
    from banet.defaults import DEFAULT_CONFIG

    assert DEFAULT_CONFIG in CANDIDATES.values()
    assert len({c.num_bams for c in CANDIDATES.values()}) >= 3
    assert len({c.dim_2 for c in CANDIDATES.values()}) >= 3
    assert len({run_name(k) for k in CANDIDATES}) == len(CANDIDATES)


def test_flops_grow_with_depth_and_width():
    assert gflops_256(BANetConfig(2, 8, 16)) < gflops_256(BANetConfig(4, 8, 16)) < gflops_256(BANetConfig(4, 16, 32))


def test_study_candidate_trains_measures_and_resumes(tmp_path):
    recipe = TrainConfig(model=BANetConfig(2, 8, 16), steps=20, batch=4, crop=32, warmup=2, save_every=10, lr=2e-3,
                         eval_every=20)
    rng = np.random.default_rng(0)
    sharp = _synthetic_photo(5, 64).astype(np.float32) / 255
    blurred = np.clip(sharp + rng.normal(0, 0.05, sharp.shape).astype(np.float32), 0, 1)
    pairs = [("synthetic", blurred, sharp)]
    first = study_candidate("tiny 8/16", recipe, tmp_path, pairs, batch_source=_source(recipe), progress=False)
    assert first["steps"] == 20 and first["parameters"] > 0 and first["gflops_256"] > 0
    assert first["seconds_per_step"] is not None and np.isfinite(first["psnr_gain_db"])
    assert (tmp_path / "tiny_8-16" / "last.pt").exists()
    again = study_candidate("tiny 8/16", recipe, tmp_path, pairs, batch_source=_source(recipe), progress=False)
    assert again["psnr_gain_db"] == first["psnr_gain_db"] and again["seconds_per_step"] is None
    table = to_markdown([first, again], 20, 1)
    assert "| tiny 8/16 |" in table and table.count("\n| tiny") == 2


def test_no_training_photos_or_a_damaged_run_is_one_line(tmp_path, monkeypatch, capsys):
    """Before: FileNotFoundError (no photos) or torch.load's UnpicklingError (a damaged last.pt) as a traceback."""
    from training import config_study

    monkeypatch.setenv("BANET_PHOTO_ROOT", str(tmp_path))
    monkeypatch.setattr("training.photos.photo_roots", lambda: [tmp_path])
    monkeypatch.setattr(config_study, "heldout_pairs", lambda: [])
    args = ["--steps", "1", "--only", "stack-2_32-64", "--runs", str(tmp_path / "runs"),
            "--output", str(tmp_path / "study")]
    assert config_study.main(args) == 1
    err = capsys.readouterr().err
    assert "error: no training photos found" in err and "Traceback" not in err, err
    damaged = tmp_path / "runs" / "stack-2_32-64" / "last.pt"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"not a checkpoint")
    assert config_study.main(args) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "cut short or corrupt" in err and "Traceback" not in err, err
    assert not (tmp_path / "study.json").exists()


def _tiny_study(monkeypatch, tmp_path):
    """config_study.main on one tiny candidate, synthetic photos and one held-out pair (seconds)."""
    from training import config_study

    config = BANetConfig(2, 8, 16)
    monkeypatch.setattr(config_study, "CANDIDATES", {"tiny 8/16": config})
    rng = np.random.default_rng(0)
    sharp = _synthetic_photo(5, 64).astype(np.float32) / 255
    blurred = np.clip(sharp + rng.normal(0, 0.05, sharp.shape).astype(np.float32), 0, 1)
    monkeypatch.setattr(config_study, "heldout_pairs", lambda: [("synthetic", blurred, sharp)])
    real_train = config_study.train

    def tiny_train(recipe, run_dir, **kwargs):
        recipe = TrainConfig(model=config, steps=recipe.steps, batch=2, crop=32, warmup=1, save_every=2,
                             eval_every=recipe.steps)
        kwargs["batch_source"] = _source(recipe)
        return real_train(recipe, run_dir, **kwargs)

    monkeypatch.setattr(config_study, "train", tiny_train)
    return config_study


def test_an_existing_study_is_refused_before_any_training_unless_force(tmp_path, monkeypatch, capsys):
    """Before: docs/config_study.{json,md} (the committed study) were replaced without --force, after the training."""
    config_study = _tiny_study(monkeypatch, tmp_path)
    output = tmp_path / "study"
    output.with_suffix(".json").write_text("committed\n")
    args = ["--steps", "2", "--runs", str(tmp_path / "runs"), "--output", str(output)]
    assert config_study.main(args) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "exists; pass --force" in err and "Traceback" not in err, err
    assert output.with_suffix(".json").read_text() == "committed\n"
    assert not (tmp_path / "runs").exists()  # refused before any training
    assert config_study.main([*args, "--force"]) == 0
    assert '"results"' in output.with_suffix(".json").read_text() and output.with_suffix(".md").exists()


def test_a_resumed_candidate_has_no_time_per_step_and_another_schedule_is_refused(tmp_path, monkeypatch, capsys):
    """Before: a candidate resumed half way reported its session's seconds over all its steps (too fast), and a
    study of other --steps silently continued the earlier study's runs on a changed learning-rate schedule."""
    config_study = _tiny_study(monkeypatch, tmp_path)
    recipe = TrainConfig(model=BANetConfig(2, 8, 16), steps=4, batch=2, crop=32, warmup=1, save_every=2,
                         eval_every=4)
    run_dir = tmp_path / "runs" / "tiny_8-16"
    from training.train import train

    train(recipe, run_dir, batch_source=_source(recipe), progress=False, stop_at=2)  # interrupted at step 2
    pairs = config_study.heldout_pairs()
    resumed = study_candidate("tiny 8/16", TrainConfig(model=recipe.model, steps=4, eval_every=4),
                              tmp_path / "runs", pairs, progress=False)
    assert resumed["seconds_per_step"] is None
    args = ["--steps", "6", "--runs", str(tmp_path / "runs"), "--output", str(tmp_path / "study")]
    assert config_study.main(args) == 1
    err = capsys.readouterr().err
    assert "holds a study of 4 steps, not 6" in err and "Traceback" not in err, err
    assert not (tmp_path / "study.json").exists()


def test_ctrl_c_in_a_study_is_one_line_and_130(monkeypatch, tmp_path, capsys):
    """TrainingInterrupted escaped config_study.main as a traceback."""
    import training.config_study as study
    from training.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("interrupted (Ctrl-C) at step 3: run/last.pt holds step 2; run the same command "
                                  "to resume")

    monkeypatch.setattr(study, "study_candidate", interrupted)
    monkeypatch.setattr(study, "heldout_pairs", lambda: [])
    assert study.main(["--steps", "4", "--runs", str(tmp_path / "runs"), "--output", str(tmp_path / "s"),
                       "--only", next(iter(study.CANDIDATES))]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted (Ctrl-C) at step 3: run/last.pt holds step 2; run the same command to resume"


def test_output_stems_keep_their_dots():
    """``--output cs/study-1.5`` wrote cs/study-1.json (with_suffix), where another study's results may be."""
    from pathlib import Path

    assert output_paths(Path("cs/study-1.5")) == (Path("cs/study-1.5.json"), Path("cs/study-1.5.md"))
    assert output_paths(Path("docs/config_study")) == (Path("docs/config_study.json"), Path("docs/config_study.md"))
    assert output_paths(Path("a/s.json")) == (Path("a/s.json"), Path("a/s.md"))
