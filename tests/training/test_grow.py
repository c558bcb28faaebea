"""training.grow: a widened network computes what the original did, and its copies can learn apart."""

from __future__ import annotations

import pytest
import torch

from banet.checkpoint import load_checkpoint
from banet.config import BANetConfig
from banet.model import BANet
from training import grow


def _small(fuse_full: bool = False) -> BANet:
    torch.manual_seed(0)
    model = BANet(BANetConfig(2, 8, 16, fuse_full)).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a mis-copied bias would show
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize("fuse_full", [False, True])
@pytest.mark.parametrize("width", [18, 24, 40])  # a few copies, half copied, more than doubled
def test_widened_network_computes_the_same_function(fuse_full: bool, width: int) -> None:
    model = _small(fuse_full)
    grown = grow.widen(model, width, seed=1)
    assert grown.config == BANetConfig(2, 8, width, fuse_full)
    assert model.en_layer2[0].weight.shape[0] == 16  # the original is left as it was
    x = torch.rand(2, 3, 22, 34, generator=torch.Generator().manual_seed(2)) - 0.5
    with torch.no_grad():
        before, after = model(x), grown(x)
    assert (after - before).abs().max().item() < 1e-5
    assert (model(x) - x).abs().max().item() > 1e-2  # the residual is not trivially zero


def test_copies_are_not_symmetric_so_training_can_separate_them() -> None:
    grown = grow.widen(_small(), 24, seed=1)
    produced = grown.en_layer2[0].weight  # produces the widened trunk: new rows are exact copies of old ones
    consumed = grown.BAM_1.input_conv.weight  # consumes it: the split among copies must be uneven
    for new in range(16, 24):
        old = next(j for j in range(16) if torch.equal(produced[new], produced[j]))
        assert not torch.allclose(consumed[:, new], consumed[:, old])


def test_cannot_narrow() -> None:
    with pytest.raises(ValueError, match="can only widen"):
        grow.widen(_small(), 8)


def test_cli_writes_a_loadable_checkpoint_and_keeps_its_input(tmp_path, capsys) -> None:
    from banet.checkpoint import save_checkpoint

    source = save_checkpoint(_small(), tmp_path / "small.safetensors", metadata={"banet.trained_steps": "7"})
    before = source.read_bytes()
    out = tmp_path / "wide.safetensors"
    assert grow.main(["--weights", str(source), "--width", "20", "--output", str(out)]) == 0
    assert "max |output difference|" in capsys.readouterr().out
    loaded = load_checkpoint(out)
    assert loaded.config.dim_2 == 20
    assert loaded.metadata["banet.trained_steps"] == "7"
    assert "small.safetensors" in loaded.metadata["banet.grown_from"]
    assert source.read_bytes() == before
    written = out.read_bytes()
    with pytest.raises(SystemExit):
        grow.main(["--weights", str(source), "--width", "20", "--output", str(out)])
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == written


@pytest.mark.parametrize("name", ["wide.onnx", "wide.pt", "wide"])
def test_weights_are_written_only_under_a_safetensors_name(tmp_path, capsys, name):
    """safetensors bytes named .onnx (or .pt) passed for a corrupt file of that kind; refused before any work."""
    with pytest.raises(SystemExit) as stopped:
        grow.main(["--width", "96", "--output", str(tmp_path / name)])
    assert stopped.value.code == 2 and "must end in .safetensors" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("width, why", [("100000", "at most 768"), ("7", "must be even"), ("0", "at least 2")])
def test_a_width_that_cannot_be_grown_is_a_usage_error(tmp_path, capsys, width, why):
    with pytest.raises(SystemExit) as stopped:  # 100000: before, a traceback from PyTorch's allocator (360 GB)
        grow.main(["--width", width, "--output", str(tmp_path / "wide.safetensors")])
    assert stopped.value.code == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "wide.safetensors").exists()
