"""precision="bf16" on a checkpoint: PyTorch under bfloat16 autocast on a CPU with bfloat16 units, refused in one
line elsewhere (on a GPU, on a CPU without the units, with another backend)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import banet.torch_backend as torch_backend
from banet.defaults import DEFAULT_ONNX, default_weights_path
from banet.errors import OptionError
from banet.torch_backend import TorchBackend, check_device_precision, cpu_bf16_units
from runtime import Deblurrer
from runtime.backends.base import BackendUnavailableError
from runtime.selection import choose

HAS_BF16 = bool(cpu_bf16_units())
NO_UNITS = "this CPU has no bfloat16 units (PyTorch sees neither AMX nor AVX512_BF16)"


def test_a_checkpoint_runs_on_torch_and_the_default_model_with_backend_torch():
    weights = default_weights_path()
    assert choose(None, "torch", "bf16") == (weights, "torch")
    assert choose(Path("my.pth"), None, "bf16") == (Path("my.pth"), "torch")
    assert choose(Path("my.safetensors"), "auto", "bf16") == (Path("my.safetensors"), "torch")
    assert choose(None, None, "bf16") == (DEFAULT_ONNX, "openvino")  # the fastest bf16 path stays OpenVINO's


@pytest.mark.parametrize("model, backend, words", [
    (Path("my.pth"), "onnxruntime", "runs a checkpoint on PyTorch .*, not on onnxruntime"),
    (Path("my.pth"), "openvino", "export it first"),
    (DEFAULT_ONNX, "torch", "not on torch; checkpoints run in bfloat16 on PyTorch"),
    (Path("my.engine"), None, "not my.engine"),
])
def test_what_bf16_cannot_run_is_refused_in_one_line(model, backend, words):
    with pytest.raises(OptionError, match=words) as caught:
        choose(model, backend, "bf16")
    assert "\n" not in str(caught.value)


def test_the_cpu_and_the_device_are_checked(monkeypatch):
    with pytest.raises(OptionError, match="on a GPU use half=True"):
        check_device_precision("cuda", "bf16")
    with pytest.raises(OptionError, match="inference_precision must be one of"):
        check_device_precision("cpu", "fp16")
    check_device_precision("cuda", "f32")
    monkeypatch.setattr(torch_backend, "cpu_bf16_units", lambda: [])
    with pytest.raises(BackendUnavailableError, match="no bfloat16 units .* run fp32 or int8") as caught:
        Deblurrer(backend="torch", precision="bf16")
    assert "\n" not in str(caught.value)


def test_units_are_read_from_pytorch_and_missing_probes_mean_none(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # no instruction-set cap: the probes decide
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_bf16_units() == ["AMX"]
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert cpu_bf16_units() == []  # a PyTorch that cannot say: refused rather than emulated


def test_a_gpu_asked_for_in_bf16_is_refused_before_looking_for_one():
    with pytest.raises(OptionError, match="on a GPU use half=True"):
        Deblurrer(precision="bf16", device="cuda")


@pytest.mark.skipif(not HAS_BF16, reason=NO_UNITS)
@pytest.mark.parametrize("shape", [(1, 3, 72, 136), (2, 3, 40, 56)])
def test_bf16_is_lowered_and_within_the_drift_budget(shape):
    rng = np.random.default_rng(3)
    batch = rng.random(shape, dtype=np.float32)
    fp32 = TorchBackend(default_weights_path(), device="cpu", threads=1)
    with Deblurrer(backend="torch", precision="bf16", threads=1) as bf16:
        backend = bf16.backend
        assert backend.inference_precision == "bf16" and "bf16 autocast" in backend.describe()
        assert backend.metadata.attention == "folded" and backend.channels_last
        raw_bf16, raw_fp32 = backend.run(batch), fp32.run(batch)
    assert raw_bf16.dtype == np.float32 and raw_bf16.shape == raw_fp32.shape
    assert not np.array_equal(raw_bf16, raw_fp32), "bf16 autocast gave bit-identical outputs: not lowered"
    psnr = 10 * np.log10(1.0 / np.mean((raw_bf16 - raw_fp32) ** 2))
    assert psnr >= 50, f"bf16 drift {psnr:.1f} dB from FP32"


def test_under_a_onednn_isa_cap_only_the_units_it_allows_count(monkeypatch):
    """ONEDNN_MAX_CPU_ISA keeps PyTorch's oneDNN kernels from units above the cap, whatever the chip has."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert cpu_bf16_units() == []
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert "AMX" not in cpu_bf16_units()
