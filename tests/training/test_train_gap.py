"""--train-gap: the held-out families measured on crops of training photos too, on a tiny network."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.model import BANet
from export.parity import psnr
from training import evaluate as E
from training import photos as P


@pytest.fixture()
def photo_root(tmp_path, monkeypatch):
    """Textured stand-in photos at the listed paths of three packages (no Debian package needed)."""
    rng = np.random.default_rng(0)
    picked = {pkg: P.TRAINING_PHOTOS[pkg][:2] for pkg in ("mate-backgrounds", "opencv-doc", "scratch")}
    for paths in picked.values():
        for rel in paths:
            coarse = rng.random((24, 32, 3), dtype=np.float32)
            image = cv2.resize(coarse, (480, 360), interpolation=cv2.INTER_CUBIC) + 0.15 * rng.random((360, 480, 3))
            target = tmp_path / rel.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(target), (np.clip(image, 0, 1) * 255).astype(np.uint8))
    monkeypatch.setenv("BANET_PHOTO_ROOT", str(tmp_path))
    # only the stand-ins: photos installed system-wide under / must not change the counts below
    monkeypatch.setattr(P, "photo_roots", lambda: [tmp_path])
    return picked


def test_training_crops_spread_over_packages_and_filter(photo_root):
    crops = E.training_eval_crops(4)
    assert len(crops) == 4 and len({name for name, _, _ in crops}) == 4
    for name, photo, (y, x, side) in crops:
        assert name.startswith("train_") and side == 256 and photo.dtype == np.float32
        assert 0 <= y and y + side <= photo.shape[0] and 0 <= x and x + side <= photo.shape[1]
    only = E.training_eval_crops(10, packages=["scratch"])
    assert len(only) == 2 and all(name.startswith("train_scratch_") for name, _, _ in only)
    with pytest.raises(FileNotFoundError, match="get_photos"):
        E.training_eval_crops(3, packages=["lomiri-wallpapers-20.04"])
    # explicit roots are the only folders searched
    assert len(E.training_eval_crops(10, roots=P.photo_roots())) == 6
    with pytest.raises(FileNotFoundError, match="get_photos"):
        E.training_eval_crops(3, roots=[P.photo_roots()[0] / "nothing-here"])


def test_training_family_pairs_are_blurred_like_the_heldout_family_and_seeded(photo_root):
    crops = E.training_eval_crops(3)
    for family in ("trajectory", "linear_light"):
        pairs = E.training_family_pairs(family, crops)
        again = E.training_family_pairs(family, crops)
        for (name, blurred, sharp), (_, b2, _) in zip(pairs, again):
            np.testing.assert_array_equal(blurred, b2)
            assert blurred.shape == sharp.shape == (256, 256, 3)
            db = psnr(blurred, sharp)
            assert 12 < db < 40, (family, name, db)
    shake = E.training_family_pairs("trajectory", crops)[0][1]
    linear = E.training_family_pairs("linear_light", crops)[0][1]
    assert not np.array_equal(shake, linear)
    with pytest.raises(ValueError, match="unknown blur family"):
        E.training_family_pairs("nope", crops)


def test_identity_has_no_gain_and_no_gap_and_a_model_is_measured_on_both_splits(photo_root):
    gap = E.evaluate_train_gap(lambda images: [np.array(i) for i in images], count=3, limit=2)
    assert set(gap["families"]) == {"trajectory", "linear_srgb", "linear_light"}
    for row in gap["families"].values():
        assert row["heldout"]["images"] == 2 and row["train"]["images"] == 3
        assert row["heldout"]["psnr_gain"] == row["train"]["psnr_gain"] == row["gap_db"] == 0
    torch.manual_seed(0)
    model = BANet(BANetConfig(1, 8, 16)).eval()
    gap = E.evaluate_train_gap(E.torch_restorer(model), count=3, limit=2)
    for row in gap["families"].values():
        assert row["gap_db"] == pytest.approx(row["train"]["psnr_gain"] - row["heldout"]["psnr_gain"])
        assert row["train"]["worst_image"].startswith("train_")
        assert row["train"]["psnr_gain"] != 0
    assert any(line.startswith("trajectory") for line in E.train_gap_lines(gap))


def test_train_gap_cli_writes_its_table(photo_root, tmp_path, capsys):
    torch.manual_seed(0)
    weights = save_checkpoint(BANet(BANetConfig(1, 8, 16)), tmp_path / "tiny.safetensors")
    out = tmp_path / "eval"
    assert E.main(["--weights", str(weights), "--train-gap", "--train-crops", "2", "--limit", "1",
                   "--output", str(out)]) == 0
    report = json.loads((out / "train_gap.json").read_text())
    assert report["train_crops"] == 2 and Path(report["weights"]).name == "tiny.safetensors"
    assert "gap" in capsys.readouterr().out
    assert E.main(["--weights", str(weights), "--train-gap", "--train-packages", "nope", "--output",
                   str(out)]) == 2
    assert "unknown training package" in capsys.readouterr().err
    # checked before the model loads: a missing checkpoint is not reached
    assert E.main(["--weights", str(tmp_path / "missing.pt"), "--train-gap", "--train-packages", "nope,scratch",
                   "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown training package(s) nope;" in err and "missing" not in err


@pytest.mark.parametrize("option", [["--train-crops", "3"], ["--train-packages", "skimage"]])
def test_train_gap_options_without_train_gap_are_refused_not_ignored(option, capsys):
    """They choose --train-gap's photos; without it they were ignored without a word."""
    with pytest.raises(SystemExit) as exit_:
        E.main(option)
    assert exit_.value.code == 2
    assert "choose the training photos of --train-gap; add --train-gap" in capsys.readouterr().err
