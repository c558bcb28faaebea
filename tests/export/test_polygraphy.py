"""NVIDIA Polygraphy's own command line compares our exports on real photos (issue 16): the shipped data loader
feeds ``polygraphy run``; FP16 against golden FP32 outputs passes at the README's tolerance, a corrupted model
fails the same comparison (exit 1), so the check can gate a pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADER = f"{ROOT / 'export' / 'polygraphy_data.py'}:load_data"
#: The README's tolerance for FP16 against FP32 outputs (the network's output is a residual in [-1, 1]).
FP16_CHECK = ["--check-error-stat", "max", "--atol", "0.02", "--rtol", "0"]


def polygraphy(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or shutil.which("polygraphy")
    env = {**os.environ, "BANET_PG_SHAPES": "1x64x64,2x48x80", "PYTHONPATH": str(ROOT)}
    return subprocess.run([exe, "run", *args, "--data-loader-script", LOADER], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def exports(tmp_path, tiny_model):
    pytest.importorskip("polygraphy", reason="Polygraphy comes with the rtx and tensorrt extras")
    from export.onnx_export import ExportOptions, export_onnx

    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = tmp_path / f"tiny_{precision}.onnx"
        export_onnx(tiny_model, paths[precision], ExportOptions(precision=precision, verify_shapes=[(1, 64, 64)]),
                    "0" * 64, "tiny.safetensors", tiny_model.config)
    return paths


def corrupted(source: Path, target: Path) -> Path:
    """The same graph with one convolution's weights scaled by 1.5: a plausible silent export bug."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    tensor = next(t for t in model.graph.initializer if t.name in conv_weights)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.5), tensor.name))
    onnx.save(model, str(target))
    return target


def test_polygraphy_compares_fp16_with_golden_fp32_and_refuses_a_corrupted_model(exports, tmp_path):
    golden = tmp_path / "golden.json"
    saved = polygraphy(str(exports["fp32"]), "--onnxrt", "--save-outputs", str(golden), cwd=tmp_path)
    assert saved.returncode == 0 and golden.is_file(), saved.stdout[-2000:] + saved.stderr[-2000:]

    fp16 = polygraphy(str(exports["fp16"]), "--onnxrt", "--load-outputs", str(golden), *FP16_CHECK, cwd=tmp_path)
    assert fp16.returncode == 0, fp16.stdout[-3000:] + fp16.stderr[-2000:]
    assert "PASSED | simple | All outputs matched" in fp16.stdout + fp16.stderr

    bad = corrupted(exports["fp32"], tmp_path / "corrupted.onnx")
    failed = polygraphy(str(bad), "--onnxrt", "--load-outputs", str(golden), *FP16_CHECK, cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "FAILED" in failed.stdout + failed.stderr


# -- the drift comparison build_trt.py runs, through Polygraphy's Comparator ----------------------------------------
SHAPES = [(1, 64, 64), (2, 48, 80), (1, 38, 126)]


def test_comparator_holds_fp16_to_the_psnr_criterion_and_fails_a_corrupted_model(exports, tmp_path):
    """``compare_runners`` (the post-build drift check and ``--check``) on two ONNX Runtime runners: the FP16
    export passes the FP16 engine threshold on every shape, the corrupted one fails with its PSNR reported."""
    from export.polygraphy_compare import compare_runners, onnxruntime_runner
    from export.trt.plan import MIN_PSNR_DB

    reference = onnxruntime_runner(exports["fp32"], "fp32")
    report = compare_runners(reference, onnxruntime_runner(exports["fp16"], "fp16"), SHAPES, MIN_PSNR_DB["fp16"])
    assert report.passed and [r.shape for r in report.results] == SHAPES
    assert all(MIN_PSNR_DB["fp16"] <= r.psnr_db < 200 and 0 < r.max_abs_error < 0.02 for r in report.results)

    bad = corrupted(exports["fp32"], tmp_path / "corrupted.onnx")
    report = compare_runners(onnxruntime_runner(exports["fp32"], "fp32"), onnxruntime_runner(bad, "bad"), SHAPES,
                             MIN_PSNR_DB["fp16"])
    assert not report.passed and all(r.psnr_db < MIN_PSNR_DB["fp16"] for r in report.results)

    strict = compare_runners(onnxruntime_runner(exports["fp32"], "fp32"), onnxruntime_runner(exports["fp16"], "fp16"),
                             SHAPES[:1], 40.0, max_abs_error=1e-9)
    assert not strict.passed  # the largest-difference criterion is applied too


def test_comparator_reports_a_candidate_that_cannot_run(exports):
    """A shape the candidate refuses fails the comparison with the runner's reason instead of raising."""
    from export.polygraphy_compare import compare_runners, onnxruntime_runner

    report = compare_runners(onnxruntime_runner(exports["fp32"], "fp32"), onnxruntime_runner(exports["fp16"], "fp16"),
                             [(1, 63, 64)], 40.0)
    assert not report.passed and report.results[0].error


def test_post_build_drift_is_a_polygraphy_comparison(exports, tmp_path, monkeypatch):
    """``measure_drift`` compares Polygraphy's TrtRunner on the engine bytes with OnnxrtRunner on the FP32 ONNX.
    No GPU here: TrtRunner is stood in by an ONNX Runtime runner on the FP16 export (so the wiring, shapes, names
    and recorded numbers are checked; engine numerics are a GPU-side check)."""
    from export.polygraphy_compare import onnxruntime_runner
    from export.trt import engine_files
    from export.trt_build import BuildOptions, RuntimeInfo, make_plan, polygraphy_backend
    from runtime.backends import cuda

    polygraphy_trt, _ = polygraphy_backend("tensorrt-rtx")
    engine = tmp_path / "tiny.engine"
    seen = {}

    def engine_from_bytes(data):
        seen["bytes"] = data
        return data

    def trt_runner(loader, name=None):
        seen["name"] = name
        return onnxruntime_runner(exports["fp16"], name)

    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", engine_from_bytes)
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", trt_runner)
    monkeypatch.setattr(cuda, "gpu_info", lambda index: type("Gpu", (), {"name": "Stand-in GPU",
                                                                          "compute_capability": (7, 5)})())
    plan = make_plan(BuildOptions(precision="fp16", onnx=exports["fp16"], output=engine, min_shape=(1, 32, 32),
                                  opt_shape=(1, 64, 64), max_shape=(2, 128, 128), drift_shapes=tuple(SHAPES)),
                     RuntimeInfo("tensorrt-rtx", None, "1.7.1.116"))
    plan.reference_onnx = exports["fp32"]
    engine.write_bytes(b"engine bytes")
    drift = engine_files.measure_drift(plan, engine)
    assert seen == {"bytes": b"engine bytes", "name": "engine"}
    assert drift["passed"] and drift["compared_with"].startswith("Polygraphy Comparator")
    assert [tuple(r["shape"]) for r in drift["results"]] == SHAPES
    assert drift["candidate"].endswith("FP16 on Stand-in GPU") and drift["worst_psnr_db"] >= 40
