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
    build_serialized,
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


# -- builder calls against a stand-in module -----------------------------------------------------------------------
class StandIn:
    """Records method calls and attribute writes; NOT TensorRT, and proves nothing about real engines."""

    def __init__(self, calls, name, returns=None, attributes=None):
        object.__setattr__(self, "_calls", calls)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_returns", returns or {})
        object.__setattr__(self, "_attributes", attributes or {})

    def __getattr__(self, attr):
        if attr in self._attributes:
            return self._attributes[attr]

        def method(*args):
            self._calls.append((f"{self._name}.{attr}", args))
            value = self._returns.get(attr)
            return value() if callable(value) else value

        return method

    def __setattr__(self, attr, value):
        self._calls.append((f"{self._name}.{attr} =", (value,)))


def stand_in_tensorrt(calls, version):
    """A module-like object with the names build_serialized uses, each recording its call."""
    import types

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class Base:
        def __init__(self):
            pass

    enum = types.SimpleNamespace
    timing = StandIn(calls, "timing_cache", {"serialize": lambda: b"timing-cache-bytes"})
    config = StandIn(calls, "config", {"create_timing_cache": lambda: timing, "get_timing_cache": lambda: timing,
                                       "set_compute_capability": lambda: True})
    network = StandIn(calls, "network", attributes={"num_layers": 7})

    def builder(logger):
        calls.append(("Builder", ()))
        return StandIn(calls, "builder", {"create_network": lambda: network, "create_builder_config": lambda: config,
                                          "create_optimization_profile": lambda: StandIn(calls, "profile"),
                                          "build_serialized_network": lambda: b"serialized-engine"})

    def parser(network, logger):
        calls.append(("OnnxParser", ()))
        return StandIn(calls, "parser", {"parse_from_file": lambda: True}, {"num_errors": 0})

    module = types.SimpleNamespace(
        __version__=version, ILogger=ILogger, IProgressMonitor=Base, IInt8EntropyCalibrator2=Base,
        Builder=builder, OnnxParser=parser,
        NetworkDefinitionCreationFlag=enum(STRONGLY_TYPED=1),
        BuilderFlag=enum(FP16="FP16", INT8="INT8", TF32="TF32", VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
        MemoryPoolType=enum(WORKSPACE="WORKSPACE"),
        HardwareCompatibilityLevel=enum(AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_CC"),
        ComputeCapability=enum(SM75="SM75", SM86="SM86"))
    return module


def names(calls):
    return [c[0] for c in calls]


def test_stand_in_builder_calls_tensorrt10_fp16(tmp_path, onnx_files):
    """Order and arguments of the TensorRT 10 weakly typed FP16 build (stand-in module, not an engine build)."""
    calls = []
    trt = stand_in_tensorrt(calls, "10.8.0.43")
    cache = tmp_path / "timing.cache"
    plan = make_plan(options(tmp_path, onnx_files["fp32"], precision="fp16", workspace_mib=1024,
                             timing_cache=cache, optimization_level=4), RuntimeInfo("tensorrt", trt, "10.8.0.43"))
    data, details = build_serialized(plan, trt)
    assert data == b"serialized-engine" and details["layers"] == 7
    assert calls[:3] == [("Builder", ()), ("builder.create_network", (0,)), ("OnnxParser", ())]
    assert ("parser.parse_from_file", (str(onnx_files["fp32"]),)) in calls
    assert ("config.set_memory_pool_limit", ("WORKSPACE", 1024 << 20)) in calls
    assert ("config.builder_optimization_level =", (4,)) in calls
    assert ("config.set_flag", ("FP16",)) in calls
    assert ("profile.set_shape", ("input", (1, 3, 64, 64), (1, 3, 128, 128), (2, 3, 256, 256))) in calls
    order = names(calls)
    assert order.index("profile.set_shape") < order.index("config.add_optimization_profile") < \
        order.index("builder.build_serialized_network")
    assert ("config.create_timing_cache", (b"",)) in calls
    assert ("config.set_timing_cache", (calls[order.index("config.set_timing_cache")][1][0], False)) in calls
    assert order.index("config.progress_monitor =") < order.index("builder.build_serialized_network")
    assert cache.read_bytes() == b"timing-cache-bytes"  # written after the build


def test_stand_in_builder_calls_strongly_typed(tmp_path, onnx_files):
    """Strongly typed call sequences (TensorRT 11, TensorRT for RTX with targets), on a stand-in module."""
    calls = []
    trt = stand_in_tensorrt(calls, "11.4.0.9")
    plan = make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16"), RuntimeInfo("tensorrt", trt, "11.4"))
    build_serialized(plan, trt)
    assert ("builder.create_network", (1 << 1,)) in calls
    assert not any(c[0] == "config.set_flag" for c in calls)

    calls.clear()
    trt = stand_in_tensorrt(calls, "1.7.1.116")
    plan = make_plan(options(tmp_path, onnx_files["fp16"], precision="fp16", targets=("sm75", "sm86")),
                     RuntimeInfo("tensorrt-rtx", trt, "1.7.1.116"))
    build_serialized(plan, trt)
    assert ("config.num_compute_capabilities =", (2,)) in calls
    assert ("config.set_compute_capability", ("SM75", 0)) in calls
    assert ("config.set_compute_capability", ("SM86", 1)) in calls


def test_stand_in_builder_calls_calibrated_int8(tmp_path, onnx_files):
    """Implicit INT8 calibration (TensorRT 10) on a stand-in module; the calibrator holds device buffers, so it
    needs cuda-python (the tensorrt / rtx extras bring it; with only the cpu and dev extras this is skipped)."""
    from runtime.backends.cuda import CudaUnavailableError, import_cudart

    try:
        import_cudart()
    except CudaUnavailableError as exc:
        pytest.skip(f"the INT8 calibrator needs cuda-python: {exc}")
    calls = []
    trt = stand_in_tensorrt(calls, "10.8.0.43")
    plan = make_plan(options(tmp_path, onnx_files["fp32"], precision="int8", calibrate=True,
                             hardware_compatibility="ampere_plus", version_compatible=True),
                     RuntimeInfo("tensorrt", trt, "10.8.0.43"))
    batches = [np.zeros((1, 3, 300, 300), np.float32)]
    build_serialized(plan, trt, calibration_batches=batches)
    assert ("config.set_flag", ("INT8",)) in calls and ("config.set_flag", ("FP16",)) in calls
    assert ("config.set_flag", ("VERSION_COMPATIBLE",)) in calls
    assert ("config.hardware_compatibility_level =", ("AMPERE_PLUS",)) in calls
    assert any(c[0] == "config.int8_calibrator =" for c in calls)
    assert ("profile.set_shape", ("input", (1, 3, 256, 256), (1, 3, 256, 256), (1, 3, 256, 256))) in calls
    assert any(c[0] == "config.set_calibration_profile" for c in calls)


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


@pytest.mark.parametrize("passed, code", [(True, 0), (False, 1)])
def test_check_exit_code_follows_the_drift_verdict(tmp_path, monkeypatch, capsys, passed, code):
    """A measured drift below the threshold fails ``--check`` (exit 1), as a failed Polygraphy comparison does."""
    import types

    import export.build_trt as cli

    measured = types.SimpleNamespace(drift={"worst_psnr_db": 61.5 if passed else 12.0, "passed": passed})
    monkeypatch.setattr(cli, "check_engine", lambda engine, reference: measured)
    assert cli.check(tmp_path / "x.engine", None) == code
    assert ("passed" if passed else "FAILED") in capsys.readouterr().out
