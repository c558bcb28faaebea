"""export.reference_cache: PyTorch's outputs of a parity sweep are read back for the same network and input (the
FP16 export after the FP32 one), and only then; a bad entry is computed again; the folder stays bounded."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export layer needs torch: pip install '.[export]'")

import export.reference_cache as reference_cache  # noqa: E402
from export.reference_cache import cached_forward, network_identity  # noqa: E402


class Counting:
    """A forward that counts its calls and returns a seeded array of the network's output shape."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.random.default_rng(self.calls).random((x.shape[0], 3, *x.shape[2:]), dtype=np.float32)


def _x(seed: int = 0, shape=(1, 3, 16, 24)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_the_same_network_and_input_are_read_back(tmp_path, tiny_model):
    forward = Counting()
    run = cached_forward(forward, tiny_model, tmp_path)
    first = run(_x())
    again = cached_forward(forward, tiny_model, tmp_path)(_x())  # a new sweep (another export) of the same network
    assert forward.calls == 1 and np.array_equal(first, again)
    run(_x(1))  # another input
    run(_x(0, (2, 3, 16, 24)))  # another shape
    assert forward.calls == 3 and len(list(tmp_path.glob("*.npy"))) == 3


def test_other_weights_or_code_are_other_entries(tmp_path, tiny_model, monkeypatch):
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-ish change
    assert network_identity(other) != network_identity(tiny_model)
    before = network_identity(tiny_model)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert network_identity(tiny_model) != before
    monkeypatch.undo()
    forward = Counting()
    cached_forward(forward, tiny_model, tmp_path)(_x())
    cached_forward(forward, other, tmp_path)(_x())
    assert forward.calls == 2


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "nan", "pickle"])
def test_a_bad_entry_is_computed_again_and_replaced(tmp_path, tiny_model, damage):
    forward = Counting()
    cached_forward(forward, tiny_model, tmp_path)(_x())
    [entry] = tmp_path.glob("*.npy")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "wrong shape":
        np.save(entry, np.zeros((1, 3, 8, 8), np.float32))
    elif damage == "nan":
        np.save(entry, np.full((1, 3, 16, 24), np.nan, np.float32))
    else:
        np.save(entry, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out = cached_forward(forward, tiny_model, tmp_path)(_x())
    assert forward.calls == 2 and out.shape == (1, 3, 16, 24) and np.isfinite(out).all()
    assert np.array_equal(np.load(entry), out)  # the entry replaced by the recomputed output


def test_the_folder_keeps_the_most_recently_used_entries(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(reference_cache, "KEEP", 2)
    forward = Counting()
    run = cached_forward(forward, tiny_model, tmp_path)
    for seed in range(4):
        run(_x(seed))
    assert len(list(tmp_path.glob("*.npy"))) == 2
    run(_x(3))
    assert forward.calls == 4  # the latest is kept
    run(_x(0))
    assert forward.calls == 5  # the oldest was dropped


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    forward = Counting()
    out = cached_forward(forward, tiny_model, blocker / "cache")(_x())
    assert out.shape == (1, 3, 16, 24) and forward.calls == 1


def test_an_fp16_export_after_the_fp32_one_reads_pytorchs_outputs(tmp_path, tiny_model, monkeypatch):
    """The real pair: export FP32, then FP16 of the same network; PyTorch runs only for the first sweep."""
    import export.onnx_export as onnx_export
    from banet.config import BANetConfig
    from export.onnx_export import ExportOptions, export_onnx

    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))
    calls = []
    original = onnx_export.torch_forward

    def counted(model):
        run = original(model)
        return lambda x: (calls.append(x.shape), run(x))[1]

    monkeypatch.setattr(onnx_export, "torch_forward", counted)
    config = tiny_model.config if hasattr(tiny_model, "config") else BANetConfig()
    shapes = [(1, 32, 48), (2, 24, 40)]
    for precision in ("fp32", "fp16"):
        _, report = export_onnx(tiny_model, tmp_path / f"tiny_{precision}.onnx",
                                ExportOptions(precision=precision, verify_shapes=shapes), "ab" * 32,
                                "tiny.safetensors", config)
        assert report.passed
    assert calls == [(1, 3, 32, 48), (2, 3, 24, 40)]  # the FP32 sweep only
