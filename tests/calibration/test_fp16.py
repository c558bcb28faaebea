"""FP16 emulation: it really rounds (drift is finite and small), and overflow shows up as Inf."""

import numpy as np
import torch

from calibration.fp16 import emulated_fp16_forward, measure
from export.onnx_export import torch_forward
from export.parity import compare, photo_batch


def test_emulation_drifts_a_little_and_fp32_residual_helps(tiny_model):
    reference = torch_forward(tiny_model)
    shapes = [(1, 48, 64), (2, 30, 38)]
    kept = compare(reference, emulated_fp16_forward(tiny_model), shapes, 0.0, None)
    rounded = compare(reference, emulated_fp16_forward(tiny_model, fp32_residual=False), shapes, 0.0, None)
    assert 60 < kept.worst_psnr_db < 150, kept.table()   # not identical: the emulation does round
    assert rounded.worst_psnr_db < kept.worst_psnr_db


def test_overflow_becomes_inf(tiny_model):
    with torch.no_grad():
        tiny_model.en_layer1[0].weight.mul_(1e6)  # activations beyond float16's 65504
    out = emulated_fp16_forward(tiny_model)(photo_batch(1, 16, 16))
    assert not np.isfinite(out).all()


def test_measure_reports_each_variant(tiny_model):
    report = measure(tiny_model, shapes=((1, 32, 32),), onnx=True)
    assert set(report) == {"emulated fp16 (fp32 residual add, as exported)", "emulated fp16 (fp16 residual add)",
                           "FP16 ONNX on ONNX Runtime CPU"}
    assert all(np.isfinite(r["worst_psnr_db"]) and r["worst_psnr_db"] > 40 for r in report.values())
