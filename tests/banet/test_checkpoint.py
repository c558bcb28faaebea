"""Checkpoint layouts from the wild load unchanged; every bad file gets a clear CheckpointError."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from banet.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)
from banet.config import FULL, BANetConfig
from banet.model import BANet, count_parameters

SMALL = BANetConfig(num_bams=3, dim_1=8, dim_2=16)


def _model(config: BANetConfig = SMALL, seed: int = 0) -> BANet:
    torch.manual_seed(seed)
    return BANet(config).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 14, 22, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_authors_full_network_layouts_load(tmp_path: Path) -> None:
    """The stack-10 64/128 network as the authors' code saves it: module-prefixed and model_state."""
    model = _model(FULL)
    prefixed = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save(prefixed, tmp_path / "BANet_GoPro.pth")
    torch.save({"model_state": prefixed, "epoch": 12, "scheduler_state": {"last_epoch": 12},
                "optimizer_state": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}},
               tmp_path / "last_BANet.pth")
    for name, layout in [("BANet_GoPro.pth", "module-prefixed"), ("last_BANet.pth", "model_state, module-prefixed")]:
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.layout == layout
        assert loaded.config == FULL and loaded.config_inferred
        assert count_parameters(loaded.model) == 17_988_547
        _same_outputs(loaded.model, model)


def test_bare_state_dict_and_own_format_round_trip(tmp_path: Path) -> None:
    model = _model()
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    loaded = load_checkpoint(tmp_path / "bare.pth")
    assert loaded.layout == "bare" and loaded.config == SMALL
    _same_outputs(loaded.model, model)

    path = save_checkpoint(model, tmp_path / "own.safetensors", metadata={"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.layout == "safetensors" and not loaded.config_inferred
    assert loaded.config == SMALL and loaded.metadata["note"] == "test"
    assert len(loaded.sha256) == 64
    _same_outputs(loaded.model, model)


def test_save_writes_only_safetensors_names(tmp_path: Path) -> None:
    for name in ("w.onnx", "w.pth", "w"):
        with pytest.raises(ValueError, match="must end in .safetensors"):
            save_checkpoint(_model(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    assert save_checkpoint(_model(), tmp_path / "W.SafeTensors").is_file()


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "w.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        save_checkpoint(_model(seed=1), path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("config", [BANetConfig(num_bams=4, dim_1=32, dim_2=64),
                                    BANetConfig(num_bams=12, dim_1=8, dim_2=16),
                                    BANetConfig(num_bams=2, dim_1=8, dim_2=24, ba_fuse_full=True)])
def test_config_is_inferred_from_shapes(config: BANetConfig) -> None:
    assert infer_config(BANet(config).state_dict()) == config


def test_missing_file() -> None:
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_checkpoint("/nonexistent/BANet_GoPro.pth")


def test_truncated_file(tmp_path: Path) -> None:
    torch.save(_model().state_dict(), tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:4096])
    with pytest.raises(CheckpointFormatError, match="truncated, corrupt or not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b""])
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint|empty file") as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value)  # one line, not torch.load's page of advice


def test_container_without_tensors(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointFormatError, match="holds list"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"lr": 0.1, "epoch": 3}, tmp_path / "dict.pth")
    with pytest.raises(CheckpointFormatError, match="entries that are not tensors: epoch, lr"):
        load_checkpoint(tmp_path / "dict.pth")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Evil()}, handle, protocol=2)
    with pytest.raises(CheckpointFormatError, match="refusing to unpickle"):
        load_checkpoint(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    state = _model().state_dict()
    del state["BAM_2.BA.conv_5.weight"]
    del state["de_layer3.0.bias"]
    state["BAM_1.BA.shortcut_conv.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tmp_path / "bad.pth")
    err = info.value
    assert sorted(err.missing) == ["BAM_2.BA.conv_5.weight", "de_layer3.0.bias"]
    assert err.unexpected == ["BAM_1.BA.shortcut_conv.weight"]
    message = str(err)
    assert "2 missing key(s): BAM_2.BA.conv_5.weight, de_layer3.0.bias" in message
    assert "1 unexpected key(s): BAM_1.BA.shortcut_conv.weight" in message
    assert "bad.pth" in message


def test_shape_mismatch_is_listed(tmp_path: Path) -> None:
    state = _model().state_dict()
    state["BAM_3.final_conv.weight"] = torch.zeros(16, 40, 5, 5)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointMismatchError, match=r"1 shape mismatch\(es\): BAM_3.final_conv.weight: "
                                                      r"file \(16, 40, 5, 5\) vs network \(16, 40, 3, 3\)"):
        load_checkpoint(tmp_path / "shape.pth")


def test_forced_config_that_does_not_fit(tmp_path: Path) -> None:
    torch.save(_model().state_dict(), tmp_path / "small.pth")
    with pytest.raises(CheckpointMismatchError, match="does not fit BANet stack-10, widths 64/128"):
        load_checkpoint(tmp_path / "small.pth", config=FULL)


def test_foreign_state_dict(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="not a BANet state_dict"):
        load_checkpoint(tmp_path / "other.pth")


def test_same_weights_give_the_same_file(tmp_path, tiny_model):
    """The sha256 exported artifacts record must identify the weights: saving twice gives identical bytes."""
    from banet.checkpoint import file_sha256, save_checkpoint

    metadata = {"banet.note": "é", "z": "1", "a": "2"}
    first = save_checkpoint(tiny_model, tmp_path / "a.safetensors", metadata=metadata)
    shas = {file_sha256(save_checkpoint(tiny_model, tmp_path / f"{i}.safetensors", metadata=metadata))
            for i in range(4)}
    assert shas == {file_sha256(first)}
    loaded = load_checkpoint(first)
    assert loaded.config == tiny_model.config


@pytest.mark.parametrize("spoil, words", [
    (lambda s: s.__setitem__("en_layer1.0.bias", s["en_layer1.0.bias"].to(torch.int32)), "not floating point"),
    (lambda s: s.__setitem__("de_layer3.0.bias", s["de_layer3.0.bias"] > 0), "bool"),
    (lambda s: s["en_layer1.0.weight"].view(-1).__setitem__(0, float("nan")), "NaN or Inf"),
])
def test_tensors_that_cannot_be_trained_weights_are_refused_by_every_loader(tmp_path: Path, spoil, words) -> None:
    """Integer, boolean and NaN tensors are refused where every path loads a checkpoint (PyTorch runs, exports,
    training), not only in one command: load_state_dict would cast them silently, NaN would surface far away."""
    state = _model().state_dict()
    spoil(state)
    torch.save(state, tmp_path / "spoilt.pth")
    with pytest.raises(CheckpointFormatError, match=words) as info:
        load_checkpoint(tmp_path / "spoilt.pth")
    assert "spoilt.pth" in str(info.value) and "\n" not in str(info.value)


def test_keys_that_are_not_parameter_names_are_refused(tmp_path: Path) -> None:
    torch.save({1: torch.zeros(1), "en_layer1.0.bias": torch.zeros(1)}, tmp_path / "ints.pth")
    with pytest.raises(CheckpointFormatError, match="keys that are not parameter names: 1"):
        load_checkpoint(tmp_path / "ints.pth")


def test_foreign_bytes_never_pass_on_torchs_advice_to_unpickle_unsafely(tmp_path):
    from banet.checkpoint import CheckpointFormatError, read_state_dict

    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointFormatError) as info:
        read_state_dict(path)
    message = str(info.value)
    # before: "... Re-running `torch.load` with `weights_only` set to `False` will likely succeed ..."
    assert "not a PyTorch checkpoint" in message and "weights_only" not in message and "\n" not in message, message


def test_a_torchscript_archive_and_a_plain_pickle_are_named_without_torchs_warnings(tmp_path, recwarn):
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), tmp_path / "scripted.pth")
    with open(tmp_path / "dumped.pth", "wb") as handle:  # pickle.dump of a state_dict, not torch.save
        pickle.dump(torch.nn.Conv2d(3, 3, 3).state_dict(), handle, protocol=4)
    recwarn.clear()  # torch.jit's own deprecation warnings, above
    with pytest.raises(CheckpointFormatError, match=r"a TorchScript archive \(torch.jit.save\).*state_dict"):
        load_checkpoint(tmp_path / "scripted.pth")  # before: "truncated, corrupt or not a PyTorch checkpoint"
    with pytest.raises(CheckpointFormatError, match=r"a pickle \(protocol 4, as pickle.dump writes\).*torch.save"):
        load_checkpoint(tmp_path / "dumped.pth")  # before: "unpickling failed: Unsupported operand 149"
    # before: torch's UserWarnings, each printed with the source line of banet/checkpoint.py that called torch.load
    assert not [w for w in recwarn if "torch" in str(w.message).lower()], [str(w.message) for w in recwarn]
