"""ONNX export: parity sweep, metadata round trip, refusal of bad requests, and the full-size network."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from banet.config import FULL
from banet.metadata import read_onnx_metadata
from banet.model import BANet
from export.onnx_export import ExportError, ExportOptions, export_onnx
from export.parity import photo_batch, psnr_db
from export.runtime_forwards import onnxruntime_forward
from export.to_onnx import main

REPO = Path(__file__).resolve().parents[2]
SMALL_SWEEP = [(1, 64, 64), (1, 8, 8), (2, 38, 50), (1, 30, 98), (1, 98, 30), (3, 14, 22), (1, 246, 20)]


def _export(model, path, **kw):
    options = ExportOptions(verify_shapes=kw.pop("verify_shapes", SMALL_SWEEP), **kw)
    return export_onnx(model, path, options, "0" * 64, "tiny.safetensors", model.config)


def test_dynamic_export_matches_pytorch_on_the_sweep(tmp_path, tiny_model):
    path, report = _export(tiny_model, tmp_path / "m.onnx")
    assert report.passed and len(report.results) == len(SMALL_SWEEP)
    for result in report.results:
        assert result.max_abs_error <= 1e-4 and result.psnr_db >= 80, result
    # Independent re-check at a shape outside the sweep, with a fresh session.
    x = photo_batch(2, 46, 118, seed=3)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnxruntime_forward(path)(x), expected, atol=1e-4, rtol=0)
    assert not (tmp_path / "m.partial.onnx").exists()


def test_metadata_round_trip(tmp_path, tiny_model):
    path, _ = _export(tiny_model, tmp_path / "m.onnx", min_size=8, max_size=512)
    meta = read_onnx_metadata(path)
    assert meta.config == tiny_model.config
    assert meta.conventions.channel_order == "BGR" and meta.conventions.offset == -0.5
    assert meta.conventions.size_multiple == 2
    assert meta.precision == "fp32" and meta.opset == 17 and meta.shape_mode == "dynamic"
    assert (meta.min_size, meta.max_size) == (8, 512)
    assert meta.source_sha256 == "0" * 64 and "torch" in meta.exporter
    model = onnx.load(str(path))
    inp = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inp] == ["batch", 3, "height", "width"]
    assert "banet.parity" in {p.key for p in model.metadata_props}


def test_static_export(tmp_path, tiny_model):
    path, report = _export(tiny_model, tmp_path / "s.onnx", static_hw=(48, 80), batch=2)
    assert [r.shape for r in report.results] == [(2, 48, 80)] and report.passed
    meta = read_onnx_metadata(path)
    assert meta.shape_mode == "static" and meta.static_shape == (2, 48, 80)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 48, 80]


def test_a_static_size_without_a_batch_fixes_batch_1(tmp_path, tiny_model):
    """--static HxW alone kept a dynamic batch in the graph, under a name (_HxW_b1) and a record (static 1xHxW)
    saying batch 1."""
    path, report = _export(tiny_model, tmp_path / "s.onnx", static_hw=(32, 48))
    assert read_onnx_metadata(path).static_shape == (1, 32, 48)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 48] and not any(d.dim_param for d in dims)


@pytest.mark.parametrize("options, name", [(["--batch", "3"], "m_b3.onnx"), (["--max-size", "64"], "m_2-64px.onnx"),
                                           (["--trained-attention"], "m_unfolded.onnx")])
def test_a_non_default_export_never_takes_the_default_name(tmp_path, tiny_model, monkeypatch, options, name):
    """``to_onnx.py --batch 3`` wrote engines/banet_default.onnx: build_trt then refused it ("a static batch of
    3") and calibration.quantize failed in ONNX Runtime's words."""
    from export.to_onnx import build_parser, default_output, options_from_args

    args = build_parser().parse_args(options)
    assert default_output("m", options_from_args(args)).name == name
    assert default_output("m", options_from_args(build_parser().parse_args([]))).name == "m.onnx"


def test_strip_index_arithmetic_is_the_same_on_any_runtime(tmp_path, tiny_model):
    """The resize sources are integer arithmetic in the graph, so a runtime that computes float division its own
    way cannot move a strip: OpenVINO compiling the plain file for dynamic shapes (what an app on its C++ API
    does) rewrites ``a / b`` as ``a * (1 / b)``, and the float32 index once drifted to 84 dB at these lengths."""
    ov = pytest.importorskip("openvino", reason="needs pip install '.[openvino]'")
    path, _ = _export(tiny_model, tmp_path / "m.onnx", verify_shapes=[(1, 64, 64)])
    assert "Floor" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = onnxruntime_forward(path)
    for h, w in [(246, 98), (100, 100), (120, 200), (270, 136)]:
        x = photo_batch(1, h, w, seed=h)
        assert psnr_db(reference(x), compiled({0: x})[0]) >= 120, (h, w)


def test_check_openvino_verifies_the_file_on_both_compile_modes(tmp_path, tiny_model):
    pytest.importorskip("openvino", reason="needs pip install '.[openvino]'")
    path, report = _export(tiny_model, tmp_path / "m.onnx", verify_shapes=[(1, 246, 98), (2, 38, 50)],
                           check_openvino=True)
    assert [other.candidate for other in report.others] == ["OpenVINO FP32 (compiled per shape)",
                                                           "OpenVINO FP32 (dynamic shapes)"]
    assert report.passed and all(len(other.results) == 2 and other.worst_psnr_db >= 120 for other in report.others)
    assert [other["candidate"] for other in report.to_dict()["others"]] == [o.candidate for o in report.others]
    assert "OpenVINO FP32 (dynamic shapes) vs PyTorch FP32" in report.table()


def test_a_file_openvino_gets_wrong_is_never_written(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("openvino", reason="needs pip install '.[openvino]'")
    import export.onnx_export as onnx_export

    real = onnx_export.openvino_forward

    def drifting(path, static=True, **options):
        forward = real(path, static=static, **options)
        return forward if static else (lambda x: forward(x) + 1e-3)  # dynamic compilation off by a little

    monkeypatch.setattr(onnx_export, "openvino_forward", drifting)
    with pytest.raises(ExportError, match="verification failed") as info:
        _export(tiny_model, tmp_path / "m.onnx", verify_shapes=[(1, 64, 64)], check_openvino=True)
    assert "OpenVINO FP32 (dynamic shapes)" in str(info.value) and "FAIL" in str(info.value)
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.failed.onnx").exists()


def test_check_openvino_without_openvino_is_refused_before_work(tmp_path, tiny_model, monkeypatch):
    import runtime.backends.openvino_backend as openvino_backend
    from runtime.backends.base import BackendUnavailableError

    def missing():
        raise BackendUnavailableError("openvino is not installed: pip install 'banet-deploy[openvino]'")

    monkeypatch.setattr(openvino_backend, "import_openvino", missing)
    with pytest.raises(ExportError, match=r"^--check-openvino: openvino is not installed") as info:
        _export(tiny_model, tmp_path / "m.onnx", check_openvino=True)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())


def test_graph_right_only_at_traced_size_is_never_written(tmp_path, tiny_model, monkeypatch):
    """Freeze the resize length as a constant (the classic export bug): verification must catch it."""
    import banet.pooling as pooling

    original = pooling.nearest_resize_matrix

    def frozen(length, bins, dtype, device):
        return original(int(length), bins, dtype, device)  # int() bakes the traced size into the graph

    monkeypatch.setattr(pooling, "nearest_resize_matrix", frozen)
    with pytest.raises(ExportError, match="verification failed") as info:
        _export(tiny_model, tmp_path / "bad.onnx")
    assert "FAIL" in str(info.value)
    assert not (tmp_path / "bad.onnx").exists()
    assert (tmp_path / "bad.failed.onnx").exists()


def test_fp16_export_drift_is_measured(tmp_path, tiny_model):
    path, report = _export(tiny_model, tmp_path / "h.onnx", precision="fp16",
                           verify_shapes=[(1, 64, 64), (2, 38, 50)])
    assert report.passed and 45 <= report.worst_psnr_db < 200
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert read_onnx_metadata(path).precision == "fp16"


@pytest.mark.parametrize("kwargs, message", [
    ({"static_hw": (47, 64)}, "static size 47x64 cannot be taken.*e.g. 48x64"),
    ({"static_hw": (0, 0)}, "static size 0x0 cannot be taken.*e.g. 2x2"),  # before: "e.g. 0x0"
    ({"opset": 9}, "opset 9 cannot express"),
    ({"min_size": 64, "max_size": 32}, "bounds"),
    ({"max_size": 40000}, "over 32768, the longest side"),
])
def test_bad_requests_are_refused_before_work(tmp_path, tiny_model, kwargs, message):
    with pytest.raises(ExportError, match=message):
        _export(tiny_model, tmp_path / "x.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def test_cli_refuses_to_overwrite(tmp_path, tiny_weights, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"user data")
    assert main(["--weights", str(tiny_weights), "--output", str(out), "-q"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"user data"


def test_cli_missing_weights(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "nope.pth"), "--output", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "nope.pth: checkpoint file not found" in err and "Traceback" not in err


def test_cli_unwritable_output(tmp_path, tiny_weights, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--weights", str(tiny_weights), "--output", str(blocker / "sub" / "m.onnx")]) == 1
    assert "cannot create output folder" in capsys.readouterr().err


def test_cli_odd_static_size(tmp_path, tiny_weights, capsys):
    assert main(["--weights", str(tiny_weights), "--output", str(tmp_path / "m.onnx"), "--static", "721x1280"]) == 1
    assert "must be positive multiples of 2" in capsys.readouterr().err


def test_cli_exports_module_prefixed_checkpoint_with_extra_sizes(tmp_path, tiny_model, capsys):
    ckpt = tmp_path / "BANet_tiny.pth"
    torch.save({"module." + k: v for k, v in tiny_model.state_dict().items()}, ckpt)
    report = tmp_path / "parity.json"
    code = main(["--weights", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--no-default-sweep",
                 "--verify-sizes", "2x36x52", "10x12", "--simplify", "--report", str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "2x36x52" in out and "1x10x12" in out and "wrote" in out
    assert report.exists()


def test_script_help_runs_without_installation():
    result = subprocess.run([sys.executable, str(REPO / "export" / "to_onnx.py"), "--help"], capture_output=True,
                            text=True, cwd="/", timeout=120)
    assert result.returncode == 0 and "--verify-sizes" in result.stdout and "--static" in result.stdout


def test_full_network_exports_fast_and_exactly(tmp_path):
    """The paper's stack-10 64/128 network: export under 60 s, parity on several shapes including batch 2."""
    torch.manual_seed(0)
    model = BANet(FULL).eval()
    started = time.perf_counter()
    path, report = export_onnx(model, tmp_path / "full.onnx",
                               ExportOptions(verify_shapes=[(1, 64, 64), (2, 38, 50), (1, 30, 98)]),
                               "0" * 64, "random", FULL)
    elapsed = time.perf_counter() - started
    assert report.passed, report.table()
    assert elapsed < 60, elapsed
    assert path.stat().st_size > 70e6


def test_dynamo_exporter_also_verifies(tmp_path, tiny_model):
    path, report = _export(tiny_model, tmp_path / "d.onnx", exporter="dynamo", opset=18,
                           verify_shapes=[(1, 64, 64), (2, 38, 50), (1, 246, 20)])
    assert report.passed, report.table()
    assert "dynamo" in read_onnx_metadata(path).exporter


@pytest.mark.parametrize("argv, message", [
    (["--verify-sizes", "1x5000x5000", "1x32x32"], "--verify-sizes 1x5000x5000 lies outside the sizes the export is "
                                                   "declared for (2...4096"),
    (["--min-size", "8", "--verify-sizes", "1x4x4"], "--verify-sizes 1x4x4 lies outside"),
    (["--min-size", "64", "--verify-sizes", "1x32x48"], "(64...4096"),
    (["--static", "16x16", "--min-size", "100"], "a --static export takes its one size: drop --min-size"),
])
def test_options_that_would_be_ignored_are_refused_before_any_work(argv, message, capsys, tmp_path):
    """A --verify-sizes shape outside --min-size/--max-size was dropped without a word (the run still said
    'verified on 8 shapes'); --min-size with --static was accepted and ignored."""
    from export.to_onnx import main

    assert main([*argv, "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()
