"""Real engine builds with TensorRT for RTX (the ``rtx`` extra), ahead of time, no GPU needed.

Running an engine needs an RTX GPU: those tests skip with the reason where there is none. The builds with
NVIDIA TensorRT proper are marked ``tensorrt`` and run where it is installed (with a GPU).
"""

import time

import numpy as np
import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.manifest import read_manifest
from banet.model import BANet
from export import build_trt, trt_build
from export.onnx_export import ExportOptions, export_onnx

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (pip install '.[rtx]')")
pytestmark = pytest.mark.rtx

TINY = BANetConfig(num_bams=1, dim_1=8, dim_2=16)
SMALL_PROFILE = ["--min", "64x64", "--opt", "128x128", "--max", "2x256x256"]


def gpu_or_skip():
    """The GPU (name, compute capability) an engine can run on here, or skip with the reason."""
    from runtime.backends.cuda import CudaUnavailableError, gpu_info

    try:
        return gpu_info(0)
    except CudaUnavailableError as exc:
        pytest.skip(f"running an engine needs a CUDA GPU: {exc}")


def export(model, path, precision, config, name="tiny.safetensors", sha256="ab" * 32):
    export_onnx(model, path, ExportOptions(precision=precision, verify_shapes=[(1, 64, 64)]), sha256, name, config)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtx")
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    return {p: export(model, folder / f"tiny_{p}.onnx", p, TINY) for p in ("fp32", "fp16")}


def check_engine_and_manifest(engine, precision, targets):
    assert engine.is_file() and engine.stat().st_size > 1_000_000, "engine missing or trivially small"
    manifest = read_manifest(engine)  # also checks the manifest's size and sha256 against the engine file
    assert manifest.runtime == "tensorrt-rtx" and manifest.runtime_version == trt.__version__
    assert manifest.precision == precision and manifest.targets == list(targets)
    assert manifest.build["strongly_typed"] is True and manifest.build["seconds"] > 0
    assert manifest.build["builder"].startswith("Polygraphy ")  # built through Polygraphy's loaders
    assert manifest.metadata["banet.schema"] == "1"
    assert manifest.drift  # measured, or the reason it was not
    return manifest


def test_fp32_default_targets(tmp_path, tiny_onnx, capsys):
    engine = tmp_path / "tiny_fp32.engine"
    code = build_trt.main(["--runtime", "tensorrt-rtx", "--onnx", str(tiny_onnx["fp32"]), "--output", str(engine),
                           "-q", *SMALL_PROFILE])
    assert code == 0, capsys.readouterr().err
    manifest = check_engine_and_manifest(engine, "fp32", [])
    assert manifest.profiles[0]["max"] == [2, 3, 256, 256]
    assert "wrote" in capsys.readouterr().out


def test_fp16_for_rtx_2080ti(tmp_path, tiny_onnx, capsys):
    engine = tmp_path / "tiny_fp16_sm75.engine"
    code = build_trt.main(["--fp16", "--runtime", "tensorrt-rtx", "--target", "sm75", "--onnx",
                           str(tiny_onnx["fp16"]), "--output", str(engine), "-q", *SMALL_PROFILE])
    assert code == 0, capsys.readouterr().err
    manifest = check_engine_and_manifest(engine, "fp16", ["sm75"])
    assert manifest.onnx["precision"] == "fp16"


@pytest.fixture
def no_builder(monkeypatch):
    """Fail the test if the TensorRT for RTX builder is ever constructed."""

    def refuse(*args, **kwargs):
        raise AssertionError("the builder was called: the request should have been refused before building")

    monkeypatch.setattr(trt, "Builder", refuse)


@pytest.mark.parametrize("args, message", [
    (["--target", "sm75"], "FP32 cannot be built for sm75 .*FP32 GEMM is not supported.*add --fp16"),
    (["--int8"], "INT8 is not available with TensorRT for RTX"),
    (["--fp16", "--target", "sm90"], "unknown target 'sm90'"),
    (["--fp16", "--target", "ampere"], "unknown target 'ampere'"),
])
def test_refusals_before_building(tmp_path, tiny_onnx, capsys, no_builder, args, message):
    onnx = tiny_onnx["fp16" if "--fp16" in args else "fp32"]
    code = build_trt.main(["--runtime", "tensorrt-rtx", "--onnx", str(onnx), "--output", str(tmp_path / "x.engine"),
                           *args, *SMALL_PROFILE])
    err = capsys.readouterr().err
    assert code == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "x.engine").exists()


def test_missing_onnx_is_exported_first(tmp_path, monkeypatch, capsys):
    """From a checkpoint only: the FP16 ONNX is exported (and verified), then the sm75 engine is built."""
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    torch.manual_seed(1)
    weights = save_checkpoint(BANet(TINY).eval(), tmp_path / "mine.safetensors")
    code = build_trt.main(["--fp16", "--runtime", "tensorrt-rtx", "--target", "sm75", "--weights", str(weights),
                           "-q", *SMALL_PROFILE])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "mine_fp16.onnx").is_file()
    manifest = check_engine_and_manifest(tmp_path / "mine_fp16_sm75.engine", "fp16", ["sm75"])
    assert manifest.metadata["banet.source_name"] == "mine.safetensors"
    first_sha = manifest.metadata["banet.source_sha256"]

    # New weights under the same name (a newer snapshot): the derived FP16 ONNX is stale and never used silently.
    torch.manual_seed(2)
    save_checkpoint(BANet(TINY).eval(), weights, overwrite=True)
    args = ["--fp16", "--runtime", "tensorrt-rtx", "--target", "sm75", "--weights", str(weights), "-q", *SMALL_PROFILE]
    assert build_trt.main(args) == 1
    assert "was exported from other weights" in capsys.readouterr().err
    assert build_trt.main([*args, "--force"]) == 0, capsys.readouterr().err
    manifest = check_engine_and_manifest(tmp_path / "mine_fp16_sm75.engine", "fp16", ["sm75"])
    assert manifest.metadata["banet.source_sha256"] not in (first_sha, None)


def test_builder_error_is_one_clear_line(tmp_path, tiny_onnx):
    """What the TensorRT for RTX builder itself says when a request slips past the plan (FP32 on Turing)."""
    plan = trt_build.make_plan(trt_build.BuildOptions(onnx=tiny_onnx["fp32"], output=tmp_path / "x.engine",
                                                      min_shape=(1, 64, 64), opt_shape=(1, 64, 64),
                                                      max_shape=(1, 64, 64), progress=False),
                               trt_build.detect_runtime("tensorrt-rtx"))
    plan.targets = ("sm75",)  # bypass the plan's refusal on purpose
    with pytest.raises(trt_build.BuildError, match="FP32 GEMM is not supported"):
        trt_build.build_serialized(plan, trt)


def test_printed_polygraphy_command_builds_the_engine(tmp_path, tiny_onnx):
    """The ``polygraphy convert`` line a plan prints (``--dry-run``, the manifest) is a command that works: run as
    printed, Polygraphy's own command line builds the FP16 sm75 engine, as large as build_trt.py's."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    output = tmp_path / "tiny_fp16_sm75.engine"
    plan = trt_build.make_plan(trt_build.BuildOptions(precision="fp16", onnx=tiny_onnx["fp16"], output=output,
                                                      targets=("sm75",), min_shape=(1, 64, 64),
                                                      opt_shape=(1, 128, 128), max_shape=(2, 256, 256)),
                               trt_build.detect_runtime("tensorrt-rtx"))
    line = trt_build.polygraphy_command(plan)
    assert line.startswith("POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert ") and "--compute-capabilities 7.5" in line
    argv = shlex.split(line.split("   #")[0])[1:]
    argv[0] = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or shutil.which("polygraphy")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data, details = trt_build.build_serialized(plan, trt)
    size = output.stat().st_size
    assert abs(size - len(data)) <= 0.05 * len(data), (size, len(data))


# -- the default model and the full network ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_model_onnx(tmp_path_factory):
    from banet.checkpoint import load_checkpoint
    from banet.defaults import default_weights_path

    folder = tmp_path_factory.mktemp("default")  # laid out as an engines folder: the files the main job makes
    loaded = load_checkpoint(default_weights_path())
    return {p: export(loaded.model, folder / ("banet_default.onnx" if p == "fp32" else "banet_default_fp16.onnx"),
                      p, loaded.config, "banet_default.safetensors", loaded.sha256) for p in ("fp32", "fp16")}


def test_design_card_command_builds_for_the_rtx_2080ti_and_says_so(default_model_onnx, monkeypatch, capsys, caplog):
    """``python export/build_trt.py --fp16``, nothing else, on a machine without a GPU: the engine's manifest lists
    sm75 (the project's RTX 2080 Ti) and the command says which GPUs it runs on."""
    from export.trt import planner

    engines = default_model_onnx["fp16"].parent
    monkeypatch.setenv("BANET_ENGINES", str(engines))
    monkeypatch.setattr(planner, "local_gpu", lambda: None)  # a machine without a GPU, whatever this one has
    if trt_build.detect_runtime("auto", "fp16").flavour != "tensorrt-rtx":
        pytest.skip("NVIDIA TensorRT is installed here, so --runtime auto picks it (builds need its GPU)")
    with caplog.at_level("INFO"):
        code = build_trt.main(["--fp16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    engine = engines / "banet_default_fp16_sm75.engine"
    manifest = check_engine_and_manifest(engine, "fp16", ["sm75"])
    assert "--target sm75" in manifest.rebuild_command
    assert "the engine runs on sm75 (Turing RTX 20xx, e.g. the RTX 2080 Ti) only" in out
    assert "built for the RTX 2080 Ti (sm75, the project's GPU)" in caplog.text
    assert f"engines folder {engines} ($BANET_ENGINES)" in caplog.text


@pytest.mark.parametrize("precision, targets", [("fp32", ()), ("fp16", ("sm75",))])
def test_default_model_engines(tmp_path, default_model_onnx, precision, targets):
    """The shipped model with the default profile (256x256 .. 4x1080x1920): FP32 Ampere+ and FP16 for sm75."""
    engine = tmp_path / f"banet_default_{precision}.engine"
    options = trt_build.BuildOptions(precision=precision, onnx=default_model_onnx[precision], output=engine,
                                     targets=targets, progress=False)
    plan = trt_build.make_plan(options, trt_build.detect_runtime("tensorrt-rtx"))
    started = time.perf_counter()
    path, manifest = trt_build.build(plan)
    print(f"default model {precision} {targets or 'default targets'}: {manifest.build['seconds']:.1f} s build, "
          f"{time.perf_counter() - started:.1f} s in all, {manifest.engine_bytes / 1e6:.1f} MB")
    check_engine_and_manifest(path, precision, targets)
    assert manifest.profiles[0]["min"] == [1, 3, 256, 256] and manifest.profiles[0]["max"] == [4, 3, 1080, 1920]


@pytest.fixture(scope="module")
def full_network_fp32(tmp_path_factory):
    """The paper's full network (random weights), exported once as FP32 ONNX for the FP32 and INT8 tests."""
    torch.manual_seed(0)
    config = BANetConfig()
    return export(BANet(config).eval(), tmp_path_factory.mktemp("full") / "full.onnx", "fp32", config,
                  "banet_full.safetensors")


@pytest.mark.parametrize("precision, targets, floor_mb", [("fp32", (), 60), ("fp16", ("sm75",), 30)])
def test_full_stack10_network_builds(tmp_path, full_network_fp32, precision, targets, floor_mb):
    """The paper's full network (random weights) parses and builds: FP32 for the default RTX targets, and FP16
    for the RTX 2080 Ti (sm75) the paper timed on."""
    torch.manual_seed(0)
    config = BANetConfig()
    onnx = (full_network_fp32 if precision == "fp32" else
            export(BANet(config).eval(), tmp_path / "full.onnx", precision, config, "banet_full.safetensors"))
    engine = tmp_path / f"full_{precision}.engine"
    plan = trt_build.make_plan(trt_build.BuildOptions(precision=precision, onnx=onnx, output=engine,
                                                      targets=targets, progress=False),
                               trt_build.detect_runtime("tensorrt-rtx"))
    _, manifest = trt_build.build(plan)
    print(f"full stack-10 {precision} {targets or 'default targets'}: {manifest.build['seconds']:.1f} s, "
          f"{manifest.engine_bytes / 1e6:.1f} MB")
    check_engine_and_manifest(engine, precision, targets)
    assert manifest.engine_bytes > floor_mb * 1e6  # 18 M weights: 72 MB in float32, 36 MB in float16


# -- every file the project writes for TensorRT: parsed, and built where TensorRT for RTX can build it -------------
def quantize_trt(fp32_onnx, output, size=(32, 32), batch=1, **kwargs):
    """The ``trt`` flavour INT8 ONNX, as ``python -m calibration.quantize --flavour trt`` writes it (which parses
    it with TensorRT for RTX before keeping it), on a small calibration set."""
    from calibration.data import CalibrationSource
    from calibration.int8 import quantize_int8

    source = CalibrationSource(count=2 * batch, size=size, batch=batch)
    result = quantize_int8(fp32_onnx, output, source, "trt", verify_shapes=((batch, *size),), threads=2, **kwargs)
    assert result.tensorrt_parse["parser"] == trt_build.installed_runtime().label  # the conformance step ran
    return result.path


def assert_parses(onnx):
    """NVIDIA's parser (TensorRT for RTX here) takes the file with no error; returns its layer count."""
    report = trt_build.parse_onnx(onnx, trt_build.detect_runtime("tensorrt-rtx"))
    assert report.ok, report.first_error()
    assert report.layers > 100
    return report.layers


def build_qdq(onnx, output, shapes=None):
    """Build a Q/DQ ONNX with TensorRT for RTX's builder, using the strongly typed plan TensorRT 11 gets.

    ``build_trt.py`` refuses INT8 with TensorRT for RTX (its support matrix has INT8 only as weight-only GEMMs, no
    INT8 convolutions), so this is a conformance build: NVIDIA's builder takes every Q/DQ node of the graph.
    """
    import dataclasses

    shapes = shapes or {}
    options = trt_build.BuildOptions(precision="int8", onnx=onnx, output=output, progress=False, **shapes)
    plan = trt_build.make_plan(options, trt_build.RuntimeInfo("tensorrt", None, "11.4.0"))
    assert plan.strongly_typed and plan.builder_flags == []
    plan = dataclasses.replace(plan, runtime=trt_build.detect_runtime("tensorrt-rtx"))
    data, details = trt_build.build_serialized(plan, trt)
    assert len(data) > 1_000_000 and details["layers"] > 100
    return data, details


TINY_SHAPES = dict(min_shape=(1, 64, 64), opt_shape=(1, 128, 128), max_shape=(2, 256, 256))
STATIC_SHAPES = dict(min_shape=(1, 64, 64), opt_shape=(1, 64, 64), max_shape=(1, 64, 64))


@pytest.fixture(scope="module")
def tiny_tensorrt_files(tmp_path_factory, tiny_onnx):
    """Every kind of file the project writes for TensorRT, for the tiny network: FP32 and FP16 exports (dynamic
    and static 1x64x64), the ``trt`` INT8 Q/DQ ONNX of both, and a mixed-precision one (blocks kept in float,
    as ``calibration.sensitivity`` / ``--auto-exclude`` leave them)."""
    folder = tmp_path_factory.mktemp("tensorrt-files")
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    files = {f"{p}_dynamic": tiny_onnx[p] for p in ("fp32", "fp16")}
    for precision in ("fp32", "fp16"):
        files[f"{precision}_static"] = folder / f"tiny_{precision}_64x64.onnx"
        export_onnx(model, files[f"{precision}_static"], ExportOptions(precision=precision, static_hw=(64, 64),
                                                                       batch=1), "ab" * 32, "tiny.safetensors", TINY)
    with pytest.MonkeyPatch.context() as patch:  # calibration data cached privately, never in the user's cache
        patch.setenv("BANET_CACHE", str(tmp_path_factory.mktemp("cache")))
        files["int8_dynamic"] = quantize_trt(tiny_onnx["fp32"], folder / "tiny_int8_trt.onnx")
        files["int8_static"] = quantize_trt(files["fp32_static"], folder / "tiny_64x64_int8_trt.onnx", size=(64, 64))
        files["int8_mixed"] = quantize_trt(tiny_onnx["fp32"], folder / "tiny_int8_trt_mixed.onnx",
                                           exclude_groups=["de_layer3", "BAM_1/BA.mask", "en_layer1"])
    return files


@pytest.mark.parametrize("kind", ["fp32_dynamic", "fp16_dynamic", "fp32_static", "fp16_static", "int8_dynamic",
                                  "int8_static", "int8_mixed"])
def test_every_tensorrt_file_parses_and_builds(tmp_path, tiny_tensorrt_files, kind):
    """Parsed by NVIDIA's parser with no error, then built: FP32 for the default targets, FP16 for sm75, INT8 with
    the builder's strongly typed Q/DQ path (see :func:`build_qdq`)."""
    onnx = tiny_tensorrt_files[kind]
    layers = assert_parses(onnx)
    precision, shape_mode = kind.split("_")[0], kind.split("_")[1]
    shapes = STATIC_SHAPES if shape_mode == "static" else TINY_SHAPES
    engine = tmp_path / f"{kind}.engine"
    if precision == "int8":
        _, details = build_qdq(onnx, engine, shapes)
        assert details["layers"] == layers
        return
    targets = ("sm75",) if precision == "fp16" else ()
    options = trt_build.BuildOptions(precision=precision, onnx=onnx, output=engine, targets=targets, progress=False,
                                     **shapes)
    _, manifest = trt_build.build(trt_build.make_plan(options, trt_build.detect_runtime("tensorrt-rtx")))
    check_engine_and_manifest(engine, precision, targets)
    assert manifest.build["network_layers"] == layers


def test_default_model_int8_parses_and_builds(tmp_path, default_model_onnx, monkeypatch):
    """The shipped model's ``trt`` INT8 ONNX: parsed with no error and built with the default profile."""
    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))
    onnx = quantize_trt(default_model_onnx["fp32"], tmp_path / "banet_default_int8_trt.onnx", size=(128, 128))
    layers = assert_parses(onnx)
    data, details = build_qdq(onnx, tmp_path / "banet_default_int8.engine")
    print(f"default model INT8 (trt flavour): {layers} layers, {details['seconds']:.1f} s build, "
          f"{len(data) / 1e6:.1f} MB")


def test_full_stack10_network_int8_parses_and_builds(tmp_path, full_network_fp32, monkeypatch):
    """The full network's ``trt`` INT8 ONNX: parsed with no error and built with the default profile. Its random
    weights make a held-out record meaningless (measuring it took 26 of this test's 44 s): the small models' tests
    measure that step."""
    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))
    onnx = quantize_trt(full_network_fp32, tmp_path / "full_int8_trt.onnx", heldout=False)
    layers = assert_parses(onnx)
    data, details = build_qdq(onnx, tmp_path / "full_int8.engine")
    print(f"full stack-10 INT8 (trt flavour): {layers} layers, {details['seconds']:.1f} s build, "
          f"{len(data) / 1e6:.1f} MB")
    assert len(data) > 30e6  # 18 M weights


# -- running engines -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_engines(tmp_path_factory, tiny_onnx):
    folder = tmp_path_factory.mktemp("engines")
    runtime = trt_build.detect_runtime("tensorrt-rtx")
    engines = {}
    for precision, targets in (("fp32", ()), ("fp16", ("sm75",))):
        options = trt_build.BuildOptions(precision=precision, onnx=tiny_onnx[precision],
                                         output=folder / f"tiny_{precision}.engine", targets=targets,
                                         min_shape=(1, 64, 64), opt_shape=(1, 128, 128), max_shape=(2, 256, 256),
                                         progress=False)
        engines[precision], _ = trt_build.build(trt_build.make_plan(options, runtime), measure=None)
    return engines


def test_engine_on_a_machine_without_gpu_is_backend_unavailable(tiny_engines):
    from runtime import BackendUnavailableError, Deblurrer
    from runtime.backends.cuda import CudaUnavailableError, gpu_info
    from runtime.backends.tensorrt import TensorRTBackend

    try:
        gpu_info(0)
        pytest.skip("this machine has a GPU")
    except CudaUnavailableError:
        pass
    with pytest.raises(BackendUnavailableError, match="GPU"):
        TensorRTBackend(tiny_engines["fp32"])
    with pytest.raises(BackendUnavailableError, match="GPU"):
        Deblurrer(tiny_engines["fp16"])


@pytest.mark.gpu
def test_engine_runs_and_matches_onnxruntime(tiny_engines, tiny_onnx):
    from export.parity import photo_batch, psnr_db
    from export.runtime_forwards import onnxruntime_forward
    from runtime.backends.tensorrt import TensorRTBackend

    gpu = gpu_or_skip()
    cc = gpu.compute_capability
    precision = "fp16" if cc == (7, 5) else "fp32"
    if cc != (7, 5) and not (cc in {(8, 6), (8, 9)} or cc >= (12, 0)):
        pytest.skip(f"{gpu.name} (sm{cc[0]}{cc[1]}) is not an RTX GPU: TensorRT for RTX engines do not run on it")
    reference = onnxruntime_forward(tiny_onnx["fp32"])
    with TensorRTBackend(tiny_engines[precision]) as backend:
        for shape in ((1, 64, 64), (2, 96, 130), (1, 256, 256)):
            x = photo_batch(*shape)
            out = backend.run(x)
            assert out.shape == x.shape and np.isfinite(out).all()
            assert psnr_db(reference(x), out) > (70 if precision == "fp32" else 40)
