"""export/build_trt.py without TensorRT: plans, profile validation, refusals, trtexec lines, the CLI, and the order
and arguments of the builder calls against a stand-in module (which proves nothing about real engines: the tests
that really build are in test_build_rtx.py, with TensorRT for RTX, and marked ``tensorrt`` for TensorRT)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from banet.config import BANetConfig
from banet.model import BANet
from export import build_trt
from export.onnx_export import ExportOptions, export_onnx
from export.trt_build import (
    BuildOptions,
    OnnxInfo,
    PlanError,
    RuntimeInfo,
    detect_runtime,
    installed_runtime,
    make_plan,
    parse_shape,
    parse_targets,
    rebuild_command,
    trtexec_command,
    validate_profile,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = BANetConfig(num_bams=1, dim_1=8, dim_2=16)
TRT10 = RuntimeInfo("tensorrt", None, "10.8.0.43")
TRT11 = RuntimeInfo("tensorrt", None, "11.4.0.9")
RTX = RuntimeInfo("tensorrt-rtx", None, "1.7.1.116")


def tensorrt_installed() -> bool:
    return detect_runtime("tensorrt").module is not None


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """A tiny network exported as FP32 and FP16 ONNX (dynamic N, H, W), its INT8 Q/DQ ONNX made by the project's
    quantizer (``trt`` flavour), and one made with ONNX Runtime's defaults (int32 biases: what NVIDIA's parser
    refuses)."""
    from calibration.data import CalibrationSource
    from calibration.int8 import quantize_int8

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    files = {}
    for precision in ("fp32", "fp16"):
        path = folder / ("tiny.onnx" if precision == "fp32" else "tiny_fp16.onnx")
        export_onnx(model, path, ExportOptions(precision=precision, verify_shapes=[(1, 64, 64)]), "ab" * 32,
                    "tiny.safetensors", TINY)
        files[precision] = path
    with pytest.MonkeyPatch.context() as patch:  # calibration data cached privately, never in the user's cache
        patch.setenv("BANET_CACHE", str(tmp_path_factory.mktemp("cache")))
        source = CalibrationSource(count=2, size=(32, 32))
        files["int8"] = quantize_int8(files["fp32"], folder / "tiny_int8_trt.onnx", source, "trt",
                                      verify_shapes=((1, 32, 32),), threads=1).path
    files["int8_ort_defaults"] = quantize_with_ort_defaults(files["fp32"], folder / "tiny_int8_ort_defaults.onnx")
    return files


def quantize_with_ort_defaults(source: Path, target: Path) -> Path:
    """A Q/DQ ONNX from plain ``quantize_static`` (int32 bias DequantizeLinear, non-zero zero points)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": np.random.default_rng(i).uniform(-0.5, 0.5, (1, 3, 32, 32))
                               .astype(np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return target


def options(tmp_path, onnx, **changes) -> BuildOptions:
    fields = dict(onnx=onnx, output=tmp_path / "tiny.engine", min_shape=(1, 64, 64), opt_shape=(1, 128, 128),
                  max_shape=(2, 256, 256))
    fields.update(changes)
    return BuildOptions(**fields)


# -- shapes and profiles -------------------------------------------------------------------------------------------
def test_shape_parsing():
    assert parse_shape("720x1280") == (1, 720, 1280)
    assert parse_shape("2x720x1280") == (2, 720, 1280)
    assert parse_shape("2x3x720x1280") == (2, 720, 1280)
    for bad in ("720", "2x1x720x1280", "axb"):
        with pytest.raises(ValueError):
            parse_shape(bad)


def dynamic(min_size=8, max_size=4096) -> OnnxInfo:
    from banet.conventions import BANET
    from banet.metadata import ModelMetadata

    metadata = ModelMetadata(BANET, TINY, "fp32", "ab" * 32, "tiny.safetensors", "test", 17, min_size=min_size,
                             max_size=max_size)
    return OnnxInfo(Path("tiny.onnx"), True, metadata, "input", ("batch", 3, "height", "width"))


@pytest.mark.parametrize("shapes, message", [
    (((1, 256, 256), (1, 128, 128), (1, 512, 512)), "min <= opt <= max"),
    (((1, 256, 256), (1, 720, 1280), (4, 1081, 1920)), "1081 is not a multiple of 2.*use 1082"),
    (((0, 256, 256), (1, 256, 256), (1, 256, 256)), "must be >= 1"),
    (((1, 4, 4), (1, 256, 256), (1, 512, 512)), "outside the 8..4096"),
    (((1, 256, 256), (1, 256, 256), (1, 8192, 256)), "outside the 8..4096"),
])
def test_profile_validation_refuses(shapes, message):
    with pytest.raises(PlanError, match=message):
        validate_profile(*shapes, dynamic())


def test_profile_against_static_onnx():
    info = OnnxInfo(Path("static.onnx"), True, None, "input", (1, 3, 720, 1280))
    profile = validate_profile((1, 720, 1280), (1, 720, 1280), (1, 720, 1280), info)
    assert profile.min == profile.max == (1, 3, 720, 1280)
    with pytest.raises(PlanError, match="static height of 720"):
        validate_profile((1, 256, 256), (1, 720, 1280), (1, 720, 1280), info)
    with pytest.raises(PlanError, match="static batch of 1"):
        validate_profile((1, 720, 1280), (1, 720, 1280), (2, 720, 1280), info)


def test_default_profile_covers_256_to_1080p():
    profile = validate_profile(build_trt.DEFAULT_MIN, build_trt.DEFAULT_OPT, build_trt.DEFAULT_MAX, dynamic())
    assert profile.min[2:] == (256, 256) and profile.max[2:] == (1080, 1920)


# -- plans: which path, which ONNX, refusals -----------------------------------------------------------------------
def test_tensorrt10_fp16_is_weakly_typed_from_fp32_onnx(tmp_path, onnx_files):
    plan = make_plan(options(tmp_path, onnx_files["fp32"], precision="fp16"), TRT10)
    assert not plan.strongly_typed and plan.builder_flags == ["FP16"]
    line = trtexec_command(plan)
    assert line.startswith("trtexec --onnx=") and "--fp16" in line and "--stronglyTyped" not in line
    assert "--minShapes=input:1x3x64x64 --optShapes=input:1x3x128x128 --maxShapes=input:2x3x256x256" in line


def test_tensorrt11_takes_precision_from_the_fp16_onnx(tmp_path, onnx_files):
    with pytest.raises(PlanError, match="FP32 ONNX but a FP16 strongly typed build needs a FP16 one"):
        make_plan(options(tmp_path, onnx_files["fp32"], precision="fp16"), TRT11)
    plan = make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16"), TRT11)
    assert plan.strongly_typed and "FP16" not in plan.builder_flags
    assert "--stronglyTyped" in trtexec_command(plan) and "--fp16" not in trtexec_command(plan)
    # the same on TensorRT 10 when asked for
    assert make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16", strongly_typed=True),
                     TRT10).strongly_typed


def test_int8_plans(tmp_path, onnx_files):
    plan = make_plan(options(tmp_path, onnx_files["int8"], precision="int8"), TRT10)
    assert plan.builder_flags == ["INT8", "FP16"] and plan.onnx.qdq_nodes > 0
    assert "--int8" in trtexec_command(plan)
    strong = make_plan(options(tmp_path, onnx_files["int8"], precision="int8"), TRT11)
    assert strong.strongly_typed and strong.builder_flags == []
    with pytest.raises(PlanError, match="no QuantizeLinear/DequantizeLinear"):
        make_plan(options(tmp_path, onnx_files["fp32"], precision="int8"), TRT10)
    with pytest.raises(PlanError, match="quantized .*--int8"):
        make_plan(options(tmp_path, onnx_files["int8"], precision="fp32"), TRT10)
    calibrated = make_plan(options(tmp_path, onnx_files["fp32"], precision="int8", calibrate=True), TRT10)
    assert "--calib=" in trtexec_command(calibrated)
    with pytest.raises(PlanError, match="needs TensorRT 10.*removed in TensorRT 11"):
        make_plan(options(tmp_path, onnx_files["fp32"], precision="int8", calibrate=True), TRT11)


def test_rtx_refusals_happen_before_building(tmp_path, onnx_files):
    with pytest.raises(PlanError, match=r"FP32 cannot be built for sm75 .*FP32 GEMM is not supported.*--fp16"):
        make_plan(options(tmp_path, onnx_files["fp32"], targets=("sm75",)), RTX)
    with pytest.raises(PlanError, match="INT8 is not available with TensorRT for RTX.*--runtime tensorrt"):
        make_plan(options(tmp_path, onnx_files["int8"], precision="int8"), RTX)
    with pytest.raises(PlanError, match="unknown target 'sm99'"):
        parse_targets("sm75,sm99")
    with pytest.raises(PlanError, match="--target selects compute capabilities for TensorRT for RTX"):
        make_plan(options(tmp_path, onnx_files["fp32"], targets=("sm86",)), TRT10)
    with pytest.raises(PlanError, match="only load on the release"):
        make_plan(options(tmp_path, onnx_files["fp32"], version_compatible=True), RTX)
    assert parse_targets("sm75, 8.6,89,sm120") == ("sm75", "sm86", "sm89", "sm120")


def test_rtx_plan_and_its_command_line(tmp_path, onnx_files):
    plan = make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16", targets=("sm75", "sm86"),
                             timing_cache=tmp_path / "tc.bin"), RTX)
    assert plan.strongly_typed and plan.targets == ("sm75", "sm86")
    line = trtexec_command(plan)
    assert line.startswith("tensorrt_rtx ") and "--computeCapabilities=75,86" in line
    assert any("timing caches are no-ops" in n for n in plan.notes)
    assert "--runtime tensorrt-rtx --target sm75,sm86" in rebuild_command(plan)


def test_the_rebuild_command_builds_the_same_engine(tmp_path, onnx_files):
    """Round 17: with --onnx and --weights the line kept only --onnx (another engine, named after the ONNX's
    source, was built and the refused one left stale), and it dropped --workspace, --optimization-level,
    --timing-cache and --tf32 (which changes an FP32 engine's numbers)."""
    weights = tmp_path / "mine.pth"
    plan = make_plan(options(tmp_path, onnx_files["fp32"], workspace_mib=512, optimization_level=1,
                             timing_cache=tmp_path / "tc.bin", tf32=True, min_psnr_db=70.0), RTX)
    plan.options.weights = weights  # as given with --weights (the tiny ONNX records no real checkpoint to check)
    line = rebuild_command(plan)
    for part in (f"--onnx {onnx_files['fp32']}", f"--weights {weights}", "--workspace 512", "--optimization-level 1",
                 f"--timing-cache {tmp_path / 'tc.bin'}", "--tf32", "--min-psnr 70"):
        assert part in line, (part, line)
    parsed = build_trt.build_parser().parse_args(line.split()[2:])
    assert (parsed.onnx, parsed.weights, parsed.workspace, parsed.optimization_level, parsed.tf32) == (
        onnx_files["fp32"], weights, 512, 1, True)


@pytest.mark.parametrize("gpu, precision, targets, note", [
    (None, "fp16", ("sm75",), "built for the RTX 2080 Ti .sm75, the project's GPU"),
    (("NVIDIA H200", (9, 0)), "fp16", ("sm75",), "H200, sm90. cannot run TensorRT for RTX engines"),
    (("NVIDIA GeForce RTX 4090", (8, 9)), "fp16", ("sm89",), "this machine's GPU, NVIDIA GeForce RTX 4090 .sm89."),
    (("NVIDIA GeForce RTX 3090", (8, 6)), "fp32", ("sm86",), "this machine's GPU"),
    (None, "fp32", (), "NOT on Turing .RTX 20xx, e.g. the RTX 2080 Ti.: for that build --fp16"),
])
def test_rtx_targets_without_target(tmp_path, onnx_files, monkeypatch, gpu, precision, targets, note):
    """No --target: the GPU found here if it is an RTX one, else sm75 for FP16 (the project's GPU) and the Ampere+
    defaults for FP32 (Turing has no FP32 GEMMs); the plan says which, and the rebuild command names them."""
    from export.trt import planner

    monkeypatch.setattr(planner, "local_gpu", lambda: gpu)
    plan = make_plan(options(tmp_path, onnx_files[precision], precision=precision), RTX)
    assert plan.targets == targets
    assert any(re.search(note, n) for n in plan.notes), plan.notes
    assert ("--target" in rebuild_command(plan)) == bool(targets)


def test_rtx_fp32_without_target_on_a_turing_gpu_is_refused(tmp_path, onnx_files, monkeypatch):
    from export.trt import planner

    monkeypatch.setattr(planner, "local_gpu", lambda: ("NVIDIA GeForce RTX 2080 Ti", (7, 5)))
    with pytest.raises(PlanError, match=r"RTX 2080 Ti, sm75.*FP32 cannot be built for sm75.*add --fp16"):
        make_plan(options(tmp_path, onnx_files["fp32"]), RTX)


def test_script_outside_the_venv_is_one_line(tmp_path):
    """Run by a Python without the project's packages (here: an isolated interpreter that cannot import numpy or
    torch from this venv), the script says what is missing and how to get it, in one line, exit 1."""
    import venv

    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a plain interpreter: standard library only
    done = subprocess.run([str(bare / "bin" / "python"), "-I", str(ROOT / "export" / "build_trt.py"), "--fp16"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert re.search(r"needs the Python package '(numpy|torch)'.*\.venv/bin/python export/build_trt.py.*pip install",
                     line), line
    assert not (tmp_path / "engines").exists()


def test_other_refusals(tmp_path, onnx_files):
    existing = tmp_path / "exists.engine"
    existing.write_bytes(b"x")
    with pytest.raises(PlanError, match="exists; pass --force"):
        make_plan(options(tmp_path, onnx_files["fp32"], output=existing), TRT10)
    with pytest.raises(PlanError, match="end in .engine"):
        make_plan(options(tmp_path, onnx_files["fp32"], output=tmp_path / "x.onnx"), TRT10)
    with pytest.raises(PlanError, match="ONNX file not found"):
        make_plan(options(tmp_path, tmp_path / "missing.onnx"), TRT10)
    with pytest.raises(PlanError, match="optimization-level must be 0..5"):
        make_plan(options(tmp_path, onnx_files["fp32"], optimization_level=7), TRT10)


def test_tensorrt_options_in_the_command_line(tmp_path, onnx_files):
    plan = make_plan(options(tmp_path, onnx_files["fp32"], workspace_mib=2048, optimization_level=5,
                             timing_cache=tmp_path / "tc.bin", version_compatible=True,
                             hardware_compatibility="ampere_plus"), TRT10)
    line = trtexec_command(plan)
    for flag in ("--noTF32", "--builderOptimizationLevel=5", "--memPoolSize=workspace:2048M", "--timingCacheFile=",
                 "--versionCompatible", "--hardwareCompatibilityLevel=ampere+", "--skipInference"):
        assert flag in line, flag


def test_drift_shapes_stay_inside_the_profile(tmp_path, onnx_files):
    plan = make_plan(options(tmp_path, onnx_files["fp32"]), TRT10)
    assert plan.drift_shapes == [(1, 256, 256)]  # 2x256x384 and 720p are outside max 2x256x256
    small = make_plan(options(tmp_path, onnx_files["fp32"], max_shape=(1, 128, 128)), TRT10)
    assert small.drift_shapes == [(1, 64, 64), (1, 128, 128)]


# -- the command line ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--fp16"], ["--int8"]])
def test_dry_run_without_tensorrt(tmp_path, onnx_files, capsys, flags):
    onnx = {"": onnx_files["fp32"], "--fp16": onnx_files["fp32"], "--int8": onnx_files["int8"]}[
        flags[0] if flags else ""]
    code = build_trt.main(flags + ["--dry-run", "--runtime", "tensorrt", "--onnx", str(onnx), "--output",
                                   str(tmp_path / "plan.engine"), "--min", "64x64", "--opt", "128x128", "--max",
                                   "2x256x256"])
    out = capsys.readouterr().out
    assert code == 0
    assert "build plan" in out and "trtexec --onnx=" in out and "rebuild command" in out
    if not tensorrt_installed():
        assert "a real build here would stop with: TensorRT is not installed" in out
    parser = installed_runtime()
    if parser is None:
        assert "TensorRT parser check: skipped (neither tensorrt nor tensorrt_rtx is installed here)" in out
    else:
        assert re.search(rf"TensorRT parser check: {re.escape(parser.label)} parses {onnx.name} \(\d+ layers\)", out)
    assert not (tmp_path / "plan.engine").exists()


def test_dry_run_refuses_what_nvidias_parser_refuses(tmp_path, onnx_files, capfd):
    """ONNX Runtime's default int32 bias Q/DQ: one line naming the node and the parser's reason, exit 1."""
    if installed_runtime() is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed: nothing to parse with")
    onnx = onnx_files["int8_ort_defaults"]
    before = onnx.read_bytes()
    code = build_trt.main(["--int8", "--dry-run", "--onnx", str(onnx), "--output", str(tmp_path / "plan.engine"),
                           "--min", "64x64", "--opt", "128x128", "--max", "2x256x256"])
    err = capfd.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(r"^error: the ONNX parser of .* refuses .*tiny_int8_ort_defaults.onnx at node \S+: .*"
                     r"re-quantize it: python -m calibration.quantize --flavour trt --force$", err.strip()), err
    assert "Int32" in err or "zero point" in err.lower(), err
    assert onnx.read_bytes() == before and not (tmp_path / "plan.engine").exists()  # a dry run changes no file


def test_parser_errors_become_one_line_with_the_reason():
    """The text TensorRT for RTX 1.7.1 gave for an int32 bias DequantizeLinear on a machine without a GPU driver."""
    from export.trt.builder import _reason

    node = "BAM_1.BA.conv_final.bias_DequantizeLinear"
    desc = (f"Invalid Node - {node}\nITensor::getDimensions: Error Code 4: API Usage Error ({node}: input has type "
            "Int32 but must have type FP8, FP4, Int4, Int8, or UInt8. In checkType at /_src/optimizer/common/"
            "nodeBase.cpp:456)\n[checkMacros.cpp::catchCudaError::250] Error Code 1: Cuda Runtime (In "
            "catchCudaError at /_src/common/dispatch/checkMacros.cpp:250 (cudaError 35: CUDA driver version is "
            "insufficient for CUDA runtime version))")
    assert _reason(desc, node) == "input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8"
    assert _reason("Assertion failed: shiftIsAllZeros(zeroPoint): Non-zero zero point is not supported.", "x") == \
        "Assertion failed: shiftIsAllZeros(zeroPoint): Non-zero zero point is not supported"


def test_auto_runtime_for_int8_is_tensorrt():
    """TensorRT for RTX has no INT8 convolutions: an INT8 plan with --runtime auto is TensorRT's, installed or not."""
    assert detect_runtime("auto", "int8").flavour == "tensorrt"
    assert detect_runtime("tensorrt-rtx", "int8").flavour == "tensorrt-rtx"  # asked for: refused by the plan


def test_real_build_without_tensorrt_fails_with_one_line(tmp_path, onnx_files, capsys):
    if tensorrt_installed():
        pytest.skip("TensorRT is installed here: this checks the message where it is not")
    code = build_trt.main(["--runtime", "tensorrt", "--onnx", str(onnx_files["fp32"]), "--output",
                           str(tmp_path / "x.engine"), "--min", "64x64", "--opt", "128x128", "--max", "2x256x256"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: TensorRT is not installed") and "pip install" in err
    assert not (tmp_path / "x.engine").exists()


def test_plan_errors_come_before_missing_tensorrt(tmp_path, onnx_files, capsys):
    code = build_trt.main(["--runtime", "tensorrt", "--onnx", str(onnx_files["fp32"]), "--output",
                           str(tmp_path / "x.engine"), "--max", "4x1081x1920"])
    assert code == 1 and "not a multiple of 2" in capsys.readouterr().err


def test_script_help_runs_without_installation():
    result = subprocess.run([sys.executable, str(ROOT / "export" / "build_trt.py"), "--help"], capture_output=True,
                            text=True, cwd="/", timeout=120)
    assert result.returncode == 0
    assert "--runtime" in result.stdout and "--target" in result.stdout and "tensorrt-rtx" in result.stdout


# -- the Polygraphy loaders a build constructs, against a stand-in TensorRT 10 module -----------------------------
def stand_in_tensorrt(version: str):
    """The names of TensorRT 10's module the loaders are constructed with: NOT TensorRT, proves nothing about real
    engines (nothing here is run; the real builds are in test_build_rtx.py)."""
    import types

    def interface(name):
        return type(name, (), {"__init__": lambda self: None})

    enum = types.SimpleNamespace
    return types.SimpleNamespace(
        __version__=version, IProgressMonitor=interface("IProgressMonitor"),
        IInt8EntropyCalibrator2=interface("IInt8EntropyCalibrator2"),
        IInt8LegacyCalibrator=interface("IInt8LegacyCalibrator"), IInt8Calibrator=interface("IInt8Calibrator"),
        MemoryPoolType=enum(WORKSPACE="WORKSPACE"),
        HardwareCompatibilityLevel=enum(AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_CC"))


@pytest.fixture
def polygraphy_tensorrt10(monkeypatch):
    """Polygraphy set up to drive a stand-in TensorRT 10 (``USE_TENSORRT_RTX`` off, its modules' ``trt`` replaced)
    for constructing loaders; restored afterwards, so this process's real builds are unaffected."""
    pytest.importorskip("polygraphy")
    from export.trt.polygraphy_build import polygraphy_backend

    polygraphy_backend(installed_runtime().flavour if installed_runtime() else "tensorrt-rtx")  # as real builds
    import importlib

    import polygraphy.config

    trt = stand_in_tensorrt("10.8.0.43")
    monkeypatch.setattr(polygraphy.config, "USE_TENSORRT_RTX", False)
    for name in ("calibrator", "config", "loader"):
        monkeypatch.setattr(importlib.import_module(f"polygraphy.backend.trt.{name}"), "trt", trt)
    return trt


def profile_shapes(config):
    """(name, min, opt, max) of each optimisation profile of a Polygraphy CreateConfig."""
    return [(name, tuple(s.min), tuple(s.opt), tuple(s.max)) for p in config.profiles for name, s in p.items()]


def test_polygraphy_loaders_tensorrt10_fp16(tmp_path, onnx_files, polygraphy_tensorrt10):
    """TensorRT 10 weakly typed FP16: FP32 ONNX parsed weakly typed, FP16 flag, the plan's profile, workspace,
    optimisation level, timing cache loaded and saved, progress monitor; no calibrator."""
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath

    from export.trt_build import build_loaders

    trt = polygraphy_tensorrt10
    cache = tmp_path / "timing.cache"
    plan = make_plan(options(tmp_path, onnx_files["fp32"], precision="fp16", workspace_mib=1024,
                             timing_cache=cache, optimization_level=4), RuntimeInfo("tensorrt", trt, "10.8.0.43"))
    loaders = build_loaders(plan, trt)
    assert isinstance(loaders.network, NetworkFromOnnxPath) and not loaders.network.strongly_typed
    assert loaders.network.path == str(onnx_files["fp32"])
    config = loaders.create_config
    assert type(config) is CreateConfig and loaders.config is config
    assert config.fp16 and not config.int8 and config.tf32 and config.calibrator is None
    assert profile_shapes(config) == [("input", (1, 3, 64, 64), (1, 3, 128, 128), (2, 3, 256, 256))]
    assert config.memory_pool_limits == {"WORKSPACE": 1024 << 20}
    assert config.builder_optimization_level == 4
    assert config.timing_cache_path == str(cache) and loaders.save_timing_cache == cache
    assert isinstance(config.progress_monitor, trt.IProgressMonitor)
    assert loaders.builder.startswith("Polygraphy ")


def test_polygraphy_loaders_fp32_and_strongly_typed(tmp_path, onnx_files, polygraphy_tensorrt10):
    """FP32 clears TF32 unless asked; ``--strongly-typed`` on 10.x and TensorRT 11 parse strongly typed with no
    precision flags (the FP16 ONNX carries the precision)."""
    from export.trt_build import build_loaders

    trt = polygraphy_tensorrt10
    plan = make_plan(options(tmp_path, onnx_files["fp32"], progress=False), RuntimeInfo("tensorrt", trt, "10.8"))
    config = build_loaders(plan, trt).create_config
    assert not config.tf32 and not config.fp16 and config.progress_monitor is None
    for runtime, strongly in ((RuntimeInfo("tensorrt", trt, "11.4.0.9"), False),
                              (RuntimeInfo("tensorrt", trt, "10.8.0.43"), True)):
        plan = make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16", strongly_typed=strongly), runtime)
        loaders = build_loaders(plan, trt)
        assert loaders.network.strongly_typed and not loaders.create_config.fp16
        assert not loaders.create_config.int8


def test_polygraphy_loaders_calibrated_int8(tmp_path, onnx_files, polygraphy_tensorrt10):
    """Implicit INT8 calibration (TensorRT 10): INT8+FP16 flags, compatibility options, Polygraphy's Calibrator
    (entropy, with the cache next to the engine) fed the calibration batches cropped to the calibration shape,
    and a fixed calibration profile that is not an optimisation profile of the engine."""
    from polygraphy.backend.trt import PostprocessConfig

    from export.trt_build import build_loaders

    trt = polygraphy_tensorrt10
    plan = make_plan(options(tmp_path, onnx_files["fp32"], precision="int8", calibrate=True,
                             hardware_compatibility="ampere_plus", version_compatible=True),
                     RuntimeInfo("tensorrt", trt, "10.8.0.43"))
    batches = [np.arange(3 * 300 * 300, dtype=np.float32).reshape(1, 3, 300, 300)]
    loaders = build_loaders(plan, trt, calibration_batches=batches)
    config = loaders.create_config
    assert config.int8 and config.fp16 and config.version_compatible
    assert config.hardware_compatibility_level == "AMPERE_PLUS"
    assert config.calibrator is loaders.calibrator and isinstance(loaders.calibrator, trt.IInt8EntropyCalibrator2)
    assert loaders.calibrator._cache == str(tmp_path / "tiny.calib")
    assert len(config.profiles) == 1  # the engine keeps one profile; calibration's is set by the postprocess step
    assert isinstance(loaders.config, PostprocessConfig)
    feed = next(iter(loaders.calibrator.data_loader))
    assert list(feed) == ["input"] and feed["input"].shape == (1, 3, 256, 256)
    assert np.array_equal(feed["input"], batches[0][:, :, 22:278, 22:278])

    class Config:  # what the postprocess step does to TensorRT's builder config
        def set_calibration_profile(self, profile):
            self.calibration = profile

    class Builder:
        def create_optimization_profile(self):
            class TrtProfile:
                def set_shape(self, name, *shapes):
                    self.shapes = (name, *shapes)
            return TrtProfile()

    class Network:
        num_inputs = 1

        def get_input(self, index):
            import types

            return types.SimpleNamespace(name="input", is_shape_tensor=False, dtype="float32", shape=(-1, 3, -1, -1))

    built = Config()
    loaders.config._func(Builder(), Network(), built)
    assert [f.__name__ for f in loaders.config._func.steps] == ["fixed_calibration_profile"]
    name, *shapes = built.calibration.shapes
    assert name == "input" and [tuple(s) for s in shapes] == [(1, 3, 256, 256)] * 3


def test_polygraphy_refuses_a_second_flavour_in_one_process(polygraphy_tensorrt10, monkeypatch):
    import polygraphy.config

    from export.trt_build import BuildError, polygraphy_backend

    monkeypatch.setattr(polygraphy.config, "USE_TENSORRT_RTX", True)
    with pytest.raises(BuildError, match="already drives TensorRT for RTX .*; use tensorrt in a new process"):
        polygraphy_backend("tensorrt")


# -- NVIDIA TensorRT proper, where it is installed (a user's GPU machine) ------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_a_small_engine_and_checks_drift(tmp_path, onnx_files, precision):
    from banet.manifest import read_manifest
    from export.trt_build import build
    from runtime.backends.cuda import CudaUnavailableError, gpu_info

    runtime = detect_runtime("tensorrt")
    if runtime.module is None:
        pytest.skip("NVIDIA TensorRT is not installed (it cannot be installed from PyPI on these machines)")
    try:
        gpu_info(0)
    except CudaUnavailableError as exc:
        pytest.skip(f"TensorRT builds need a GPU: {exc}")
    onnx = onnx_files["fp16" if precision == "fp16" and (runtime.major or 10) >= 11 else "fp32"]
    plan = make_plan(options(tmp_path, onnx, precision=precision, progress=False), runtime)
    engine, manifest = build(plan)
    assert read_manifest(engine).engine_sha256 == manifest.engine_sha256
    assert manifest.gpu and manifest.runtime == "tensorrt"
    assert manifest.drift["passed"] and manifest.drift["worst_psnr_db"] >= plan.min_psnr_db


def test_int8_without_its_qdq_onnx(tmp_path, monkeypatch, capsys):
    """Dry run: the plan is printed with the missing input and its command; a real build stops on it."""
    from banet.checkpoint import save_checkpoint

    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    weights = save_checkpoint(BANet(TINY).eval(), tmp_path / "mine.safetensors")  # --weights must exist
    common = ["--int8", "--runtime", "tensorrt", "--weights", str(weights)]
    assert build_trt.main(common + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "MISSING INPUT" in out and "python -m calibration.quantize --flavour trt" in out
    assert build_trt.main(common) == 1
    assert "the INT8 Q/DQ ONNX is missing" in capsys.readouterr().err


def test_a_dry_run_refuses_weights_it_would_export_but_cannot_load(tmp_path, monkeypatch, capsys):
    """Before: "ready to build here (drop --dry-run)" for foreign bytes, which the real build then refused."""
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    weights = tmp_path / "rand.pth"
    weights.write_bytes(np.random.default_rng(4).integers(0, 256, 3000, np.uint8).tobytes())
    for extra in (["--dry-run"], []):
        assert build_trt.main(["--fp16", "--runtime", "tensorrt", "--weights", str(weights), *extra]) == 1
        err = capsys.readouterr().err
        assert "rand.pth: not a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rand.pth"]


@pytest.mark.parametrize("passed, code", [(True, 0), (False, 1)])
def test_check_exit_code_follows_the_drift_verdict(tmp_path, monkeypatch, capsys, passed, code):
    """A measured drift below the threshold fails ``--check`` (exit 1), as a failed Polygraphy comparison does."""
    import types

    import export.build_trt as cli

    measured = types.SimpleNamespace(drift={"worst_psnr_db": 61.5 if passed else 12.0, "passed": passed})
    monkeypatch.setattr(cli, "check_engine", lambda engine, reference: measured)
    assert cli.check(tmp_path / "x.engine", None) == code
    assert ("passed" if passed else "FAILED") in capsys.readouterr().out
