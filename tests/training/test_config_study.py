"""The quality-per-FLOP study: a tiny candidate trains, is measured, and lands in a readable table."""

import numpy as np

from banet.config import BANetConfig
from tests.training.test_train import _source, _synthetic_photo
from training.config_study import CANDIDATES, gflops_256, run_name, study_candidate, to_markdown
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
