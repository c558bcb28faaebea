"""training.interpolate: weight-space blends of two networks of one shape, and the CLI's refusals."""

from __future__ import annotations

import pytest
import torch

from banet.checkpoint import load_checkpoint, save_checkpoint
from banet.config import BANetConfig
from banet.model import BANet
from training import interpolate as I

SMALL = BANetConfig(2, 8, 16)


def _net(seed: int, config: BANetConfig = SMALL) -> BANet:
    torch.manual_seed(seed)
    model = BANet(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def test_ends_are_the_inputs_and_the_middle_is_the_parameter_mean() -> None:
    base, tuned = _net(0), _net(1)
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(2)) - 0.5
    with torch.no_grad():
        assert torch.equal(I.interpolate(base, tuned, 0.0)(x), base(x))
        assert torch.equal(I.interpolate(base, tuned, 1.0)(x), tuned(x))
        half = I.interpolate(base, tuned, 0.5)
        middle = half(x)
    for (name, p), q, r in zip(half.named_parameters(), base.parameters(), tuned.parameters()):
        torch.testing.assert_close(p, (q + r) / 2, msg=name)
    assert (middle - base(x)).abs().max() > 1e-4 and (middle - tuned(x)).abs().max() > 1e-4
    assert not torch.equal(next(base.parameters()), next(half.parameters()))  # inputs untouched, new network


def test_refuses_other_shapes_and_alpha_outside_0_1() -> None:
    with pytest.raises(ValueError, match="same shape"):
        I.interpolate(_net(0), _net(1, BANetConfig(2, 8, 24)), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        I.interpolate(_net(0), _net(1), 1.5)


def test_cli_writes_a_loadable_blend_and_never_overwrites(tmp_path, capsys) -> None:
    base, tuned = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"
    save_checkpoint(_net(0), base)
    save_checkpoint(_net(1), tuned)
    out = tmp_path / "blend.safetensors"
    args = ["--base", str(base), "--tuned", str(tuned), "--alpha", "0.25", "--output", str(out)]
    assert I.main(args) == 0
    loaded = load_checkpoint(out)
    expected = I.interpolate(load_checkpoint(base).model, load_checkpoint(tuned).model, 0.25)
    for p, q in zip(loaded.model.parameters(), expected.parameters()):
        torch.testing.assert_close(p, q)
    assert "0.25 x" in loaded.metadata["banet.interpolated"]
    before = out.read_bytes()
    with pytest.raises(SystemExit):
        I.main(args)
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    with pytest.raises(SystemExit):
        I.main([*args[:5], "-0.1", "--output", str(tmp_path / "x.safetensors")])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # safetensors bytes named .onnx would pass for a corrupt ONNX
        I.main([*args[:6], "--output", str(tmp_path / "blend.onnx")])
    assert "must end in .safetensors" in capsys.readouterr().err and not (tmp_path / "blend.onnx").exists()
    assert I.main(["--tuned", str(tmp_path / "missing.safetensors"), "--alpha", "0.5",
                   "--output", str(tmp_path / "y.safetensors")]) == 1  # a file, not an option: one error line
    err = capsys.readouterr().err
    assert "error: --tuned" in err and "missing.safetensors" in err and "usage:" not in err
    assert not (tmp_path / "y.safetensors").exists()
