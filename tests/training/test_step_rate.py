"""training.step_rate: the measurement runs on a tiny network and says in one line when there are no photos."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from banet.config import BANetConfig
from training import step_rate as R
from training.train import PhotoBatches, TrainConfig


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((120, 160, 3)) * 255).astype(np.uint8)


def test_rates_are_measured_with_and_without_workers():
    config = replace(TrainConfig(), model=BANetConfig(1, 8, 16), batch=2, crop=32)
    source = PhotoBatches([_photo(0), _photo(1)], config)
    for workers in (0, 2):
        assert R.data_rate(source, workers, steps=3, skip=1) > 0
        assert R.step_rate(source, config, torch.device("cpu"), workers, steps=2, skip=1, precision="fp32") > 0


def test_no_photos_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BANET_PHOTO_ROOT", str(tmp_path))
    monkeypatch.setattr("training.photos.photo_roots", lambda: [tmp_path])
    with pytest.raises(SystemExit) as exc:
        R.main(["--workers", "0", "--steps", "1"])
    assert exc.value.code == 1 and "get_photos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        R.main(["--workers", "-1"])
    assert exc.value.code == 2


@pytest.mark.parametrize("widths", ["32", "a,b", "32,0", "1,2,3"])
def test_bad_widths_are_one_line(widths, capsys):
    with pytest.raises(SystemExit) as exc:
        R.main(["--widths", widths])
    assert exc.value.code == 2 and "--widths must be two positive integers" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--workers", "0", "100000"], 2, "at most"), (["--crop", "7"], 2, "must be even"),
    (["--batch", "0"], 2, "--batch"), (["--device", "gpu"], 1, "is not a device"),
    (["--device", "cpu", "--precision", "fp16"], 1, "use --precision bf16")])
def test_bad_options_are_one_line_before_the_photos(args, code, needle, monkeypatch, capsys):
    """Before: --device gpu and fp16 on a CPU were tracebacks (fp16 trained unscaled), --crop 7 failed inside the
    network, and any --workers count was started."""
    monkeypatch.setattr("training.photos.load_training_photos", lambda: pytest.fail("photos decoded"))
    with pytest.raises(SystemExit) as exc:
        R.main(args)
    err = capsys.readouterr().err
    assert exc.value.code == code and needle in err and "Traceback" not in err, err


def test_an_unknown_recipe_is_refused_before_the_photos_are_decoded(capsys, monkeypatch):
    """Before: ``--recipe`` took any name; a typo was found only after every training photo was decoded."""
    monkeypatch.setattr("training.photos.load_training_photos", lambda *a, **k: pytest.fail("decoded the photos"))
    with pytest.raises(SystemExit) as exit_info:
        R.main(["--recipe", "do-no-harn", "--device", "cpu", "--precision", "fp32"])
    assert exit_info.value.code == 2 and "--recipe" in capsys.readouterr().err
