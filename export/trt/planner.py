""":func:`make_plan`: options + TensorRT flavour -> a validated :class:`BuildPlan`, or :class:`PlanError` with the
reason and what to do instead."""


from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

from banet.artifacts import onnx_path as exported_onnx_path
from banet.manifest import (
    HARDWARE_COMPATIBILITY,
    RTX_DEFAULT_TARGETS,
    RTX_KNOWN_TARGETS,
    cc_to_target,
    described_engine,
    manifest_path,
)
from banet.outputs import check_input, check_not_input, check_output
from banet.outputs import shown_path as show
from banet.shapes import batch_problem
from export.artifact_chain import export_command
from export.trt.onnx_info import (
    INT8_COMMAND,
    OnnxInfo,
    expected_onnx_info,
    nchw,
    read_given_onnx,
    read_onnx_info,
    shape_text,
    validate_profile,
)
from export.trt.plan import BuildOptions, BuildPlan, default_engine, default_onnx, stale_onnx, weights_stem
from export.trt.runtime_info import PRECISIONS, PlanError, RuntimeInfo

log = logging.getLogger(__name__)

#: Largest ``--workspace`` in MiB: 1 TiB, more memory than any GPU has (TensorRT would take, or overflow on, any
#: number; a typo of a few digits must be one line, not a traceback from its bindings).
MAX_WORKSPACE_MIB = 1 << 20


def make_plan(options: BuildOptions, runtime: RuntimeInfo, allow_missing_input: bool = False) -> BuildPlan:
    """Decide and validate everything that needs neither TensorRT nor a GPU; PlanError with the reason.

    ``allow_missing_input`` (dry runs): a missing INT8 Q/DQ ONNX is recorded in ``plan.missing`` instead of
    refused, and the profile is checked against the bounds the exporter gives it.
    """
    precision = options.precision
    if precision not in PRECISIONS:
        raise PlanError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    notes: list[str] = []
    rtx = runtime.flavour == "tensorrt-rtx"
    targets = tuple(options.targets) or (default_rtx_targets(precision, notes) if rtx else ())
    strongly_typed = _check_runtime_options(options, runtime, targets, notes)
    stem, weights, onnx, export_precision, missing = _choose_onnx(options, strongly_typed, rtx, allow_missing_input,
                                                                  notes)
    _check_onnx_precision(onnx, options, strongly_typed)
    profile = validate_profile(options.min_shape, options.opt_shape, options.max_shape, onnx)
    flags = _builder_flags(options, strongly_typed, notes)
    output = _checked_output(options, stem, targets, onnx)
    drift = [s for s in options.drift_shapes
             if all(profile.min[i] <= v <= profile.max[i] for i, v in zip((0, 2, 3), s))
             and s[1] % onnx.size_multiple == 0 and s[2] % onnx.size_multiple == 0]
    if not drift:
        drift = [(profile.min[0], profile.min[2], profile.min[3]), (profile.opt[0], profile.opt[2], profile.opt[3])]
    fp32_source = (onnx.precision == "fp32") if onnx.exists else export_precision == "fp32"
    reference = onnx.path if fp32_source else onnx.path.with_name(stem + ".onnx")
    plan = BuildPlan(options, runtime, precision, strongly_typed, onnx, output, profile, targets, flags, weights,
                     sorted(set(drift), key=drift.index), reference, notes, export_precision)
    if not onnx.exists and export_precision is None:
        plan.missing = missing
    return plan


def _check_runtime_options(options: BuildOptions, runtime: RuntimeInfo, targets: tuple[str, ...],
                           notes: list[str]) -> bool:
    """What the chosen TensorRT can do with these options; returns whether the network is strongly typed."""
    precision = options.precision
    flavour = runtime.flavour
    rtx = flavour == "tensorrt-rtx"
    if targets and not rtx:
        raise PlanError("--target selects compute capabilities for TensorRT for RTX (--runtime tensorrt-rtx); "
                        "TensorRT builds for the GPU it runs on (use --hardware-compatible ampere_plus for an "
                        "engine that runs on other Ampere+ GPUs)")
    if rtx and precision == "int8":
        raise PlanError("INT8 is not available with TensorRT for RTX: it has no INT8 convolution path (only "
                        "weight-only INT8 GEMMs); build INT8 engines with TensorRT 10+ (--runtime tensorrt) from "
                        f"the Q/DQ ONNX ({INT8_COMMAND}), or use --fp16")
    if rtx and "sm75" in targets and precision == "fp32":
        raise PlanError("FP32 cannot be built for sm75 (Turing, e.g. RTX 2080 Ti) with TensorRT for RTX: it has no "
                        "FP32 GEMM on Turing (\"FP32 GEMM is not supported\"), and BANet's strip pooling runs as "
                        "MatMuls; add --fp16 (builds from the half-precision export of to_onnx.py --fp16)")
    if rtx and options.version_compatible:
        raise PlanError("--version-compatible is a TensorRT option: TensorRT for RTX engines only load on the "
                        "release that built them")
    if rtx and options.hardware_compatibility != "none":
        raise PlanError("--hardware-compatible is a TensorRT option; with TensorRT for RTX choose the GPUs with "
                        "--target (e.g. --target sm75,sm86,sm89,sm120)")
    if options.hardware_compatibility not in HARDWARE_COMPATIBILITY:
        raise PlanError(f"unknown --hardware-compatible {options.hardware_compatibility!r}; choose one of "
                        f"{HARDWARE_COMPATIBILITY}")
    major = runtime.major
    strongly_typed = rtx or options.strongly_typed or (major is not None and major >= 11)
    if not options.calibrate and (options.calibration_cache is not None
                                  or tuple(options.calibration_shape) != BuildOptions.calibration_shape):
        raise PlanError("--calibration-cache and --calibration-shape set up --calibrate (TensorRT 10 implicit INT8 "
                        "calibration); without it they would be ignored: add --int8 --calibrate, or drop them")
    if options.calibrate:
        if precision != "int8":
            raise PlanError("--calibrate is for --int8 (implicit INT8 calibration)")
        if rtx or (major is not None and major >= 11):
            raise PlanError(f"--calibrate needs TensorRT 10: {runtime.label} has no INT8 calibrators (removed in "
                            f"TensorRT 11); build from the Q/DQ ONNX instead ({INT8_COMMAND})")
        if options.strongly_typed:
            raise PlanError("--calibrate uses implicit quantization, which needs a weakly typed network; drop "
                            "--strongly-typed, or build from the Q/DQ ONNX without --calibrate")
    if not 0 <= options.optimization_level <= 5:
        raise PlanError(f"--optimization-level must be 0..5 (TensorRT's builder levels), got "
                        f"{options.optimization_level}")
    if options.workspace_mib is not None and not 1 <= options.workspace_mib <= MAX_WORKSPACE_MIB:
        raise PlanError(f"--workspace must be a positive number of MiB up to {MAX_WORKSPACE_MIB} (1 TiB, more than "
                        f"any GPU has), got {options.workspace_mib}")
    if options.min_psnr_db is not None and not math.isfinite(options.min_psnr_db):
        raise PlanError(f"--min-psnr must be a finite number of dB, got {options.min_psnr_db}")
    if runtime.module is None and flavour == "tensorrt" and not strongly_typed and not options.calibrate:
        notes.append("TensorRT is not installed here, so its version is unknown: this is the TensorRT 10.x plan "
                     "(weakly typed); on TensorRT 11+ the build is strongly typed, from the "
                     + ("FP16 ONNX" if precision == "fp16" else "Q/DQ ONNX" if precision == "int8" else "same ONNX"))
    if rtx and options.timing_cache:
        notes.append("timing caches are no-ops in TensorRT for RTX (kernels are compiled just in time on the "
                     "user's GPU; the runtime backend keeps a runtime cache instead): --timing-cache ignored")
    return strongly_typed


#: The project's GPU: what an FP16 build targets when it is told no GPU and finds no RTX GPU here.
PROJECT_TARGET = "sm75"


def local_gpu() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of this machine's first CUDA GPU, or None where there is none (or no CUDA)."""
    from runtime.backends.cuda import CudaUnavailableError, gpu_info

    try:
        gpu = gpu_info(0)
    except (CudaUnavailableError, ImportError, OSError):
        return None
    return gpu.name, tuple(gpu.compute_capability)


def default_rtx_targets(precision: str, notes: list[str]) -> tuple[str, ...]:
    """TensorRT for RTX targets when ``--target`` is not given: this machine's GPU if it is an RTX one; else, for
    FP16, the RTX 2080 Ti (sm75, the project's GPU); else (FP32, which Turing cannot run) the builder's Ampere+
    defaults. The choice is noted in the plan (and printed), so nobody is left guessing where the engine runs."""
    gpu = local_gpu()
    if gpu is not None:
        name, cc = gpu
        target = cc_to_target(cc)
        if target in RTX_KNOWN_TARGETS:
            if target == PROJECT_TARGET and precision == "fp32":
                raise PlanError(f"this machine's GPU ({name}, sm75) is a Turing GPU, and FP32 cannot be built for sm75 "
                                "with TensorRT for RTX (\"FP32 GEMM is not supported\"); add --fp16, or pass --target "
                                "for other GPUs")
            notes.append(f"no --target: built for this machine's GPU, {name} ({target}); --target picks others")
            return (target,)
        notes.append(f"this machine's GPU ({name}, {target}) cannot run TensorRT for RTX engines (RTX GPUs only)")
    if precision == "fp16":
        notes.append(f"no --target: built for the RTX 2080 Ti ({PROJECT_TARGET}, the project's GPU); for other RTX "
                     "GPUs pass e.g. --target sm86,sm89,sm120 (or sm75,sm86,sm89,sm120 for all of them)")
        return (PROJECT_TARGET,)
    notes.append(f"no --target: the engine runs on Ampere and later RTX GPUs ({', '.join(RTX_DEFAULT_TARGETS)}), "
                 "NOT on Turing (RTX 20xx, e.g. the RTX 2080 Ti): for that build --fp16 (FP32 cannot target sm75)")
    return ()


def _choose_onnx(options: BuildOptions, strongly_typed: bool, rtx: bool, allow_missing_input: bool,
                 notes: list[str]) -> tuple[str, Path | None, OnnxInfo, str | None, str | None]:
    """Which ONNX the build reads: (weights stem, weights, ONNX info, precision to export it in first or None,
    why it is missing or None). A stale default ONNX is refused, or re-exported first with ``--force``."""
    precision = options.precision
    missing = None
    if options.weights is not None:
        check_input(options.weights, error=PlanError, what="checkpoint file")
    stem, weights = weights_stem(options)
    onnx_path = Path(options.onnx) if options.onnx else default_onnx(stem, precision, strongly_typed,
                                                                     options.calibrate)
    export_precision: str | None = None
    fp32_sibling = exported_onnx_path(stem) if options.onnx is None else None
    if options.onnx is not None or onnx_path.is_file():
        made_as = "fp32" if precision == "fp16" and not strongly_typed else precision
        onnx = read_given_onnx(onnx_path, fp32_sibling, made_as, weights) if options.onnx is not None else \
            read_onnx_info(onnx_path, fallback_metadata=fp32_sibling)
        stale = stale_onnx(onnx, weights) if options.onnx is None else None
        if options.onnx is not None and options.weights is not None and \
                (other := stale_onnx(onnx, Path(options.weights))) is not None:
            # the engine was named after --weights and built from another model's ONNX (exit 0)
            raise PlanError(f"--onnx {other}; give the ONNX exported from --weights, or leave --weights out")
        if stale and (onnx.qdq_nodes or not options.force):
            fix = (f"re-quantize it: {INT8_COMMAND} --force" if onnx.qdq_nodes else
                   f"re-export it: {export_command(weights, onnx.precision)} --force (or pass --force here)")
            raise PlanError(f"{stale}; {fix}")
        if stale:
            notes.append(f"{stale}: re-exported first (--force)")
            export_precision = onnx.precision
            onnx = expected_onnx_info(onnx_path, export_precision)
    elif precision == "int8" and not options.calibrate:
        missing = (f"{show(onnx_path)}: the INT8 Q/DQ ONNX is missing; create it with: {INT8_COMMAND}"
                   + ("" if rtx else " (or, on TensorRT 10, calibrate at build time with --calibrate)"))
        if not allow_missing_input:
            raise PlanError(missing)
        onnx = replace(expected_onnx_info(onnx_path, "int8"), metadata_note="missing")
    else:
        export_precision = "fp16" if (precision == "fp16" and strongly_typed) else "fp32"
        onnx = expected_onnx_info(onnx_path, export_precision)
    if export_precision is not None:  # loaded again to export: milliseconds, against a build's minutes
        _check_checkpoint(weights)
    return stem, weights, onnx, export_precision, missing


def _check_checkpoint(weights: Path) -> None:
    """Refuse (PlanError) a checkpoint the build would export from but cannot load, while planning: a dry run
    said "ready to build here" for foreign bytes, which the real build then refused."""
    from banet.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(weights)
    except CheckpointError as exc:
        raise PlanError(str(exc)) from None


def _check_onnx_precision(onnx: OnnxInfo, options: BuildOptions, strongly_typed: bool) -> None:
    """An existing ONNX must be what the requested precision path builds from (Q/DQ for INT8...)."""
    precision, onnx_path = options.precision, onnx.path
    wanted = {"fp32": "fp32", "fp16": "fp16" if strongly_typed else None, "int8": None}[precision]
    if onnx.exists:
        if precision == "int8" and not options.calibrate and not onnx.qdq_nodes:
            raise PlanError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: INT8 engines are built from "
                            f"the Q/DQ ONNX ({INT8_COMMAND}), or with --calibrate on TensorRT 10")
        if precision != "int8" and onnx.qdq_nodes:
            raise PlanError(f"{onnx_path} is quantized (Q/DQ nodes): build it with --int8")
        if options.calibrate and onnx.precision != "fp32":
            raise PlanError(f"--calibrate needs the FP32 ONNX, {onnx_path} is {onnx.precision}")
        if wanted and onnx.precision != wanted:
            hint = (" (the strongly typed path takes its precision from the ONNX: export it with "
                    "export/to_onnx.py --fp16)" if wanted == "fp16" else "")
            raise PlanError(f"{onnx_path} is a {onnx.precision.upper()} ONNX but a {precision.upper()} "
                            f"{'strongly typed ' if strongly_typed else ''}build needs a {wanted.upper()} one{hint}")


def _builder_flags(options: BuildOptions, strongly_typed: bool, notes: list[str]) -> list[str]:
    """The builder flags of a weakly typed build (a strongly typed one takes precision from the ONNX)."""
    precision = options.precision
    flags = []
    if not strongly_typed:
        if precision == "fp16":
            flags.append("FP16")
        if precision == "int8":
            flags += ["INT8", "FP16"]
    if precision == "fp32" and not options.tf32:
        flags.append("no TF32")
    if options.version_compatible:
        flags.append("VERSION_COMPATIBLE")
    if precision == "int8" and strongly_typed:
        notes.append("strongly typed INT8: layers without Q/DQ run in the ONNX's own precision (FP32)")
    return flags


def _check_manifest_path(engine: Path, force: bool) -> None:
    """Refuse a file at the engine's manifest name (``x.engine`` -> ``x.json``) as the engine itself is refused:
    without ``--force`` when it exists (a user's own JSON, another engine's manifest), and even with ``--force``
    when it is the manifest of another engine file (``x.plan``'s, which shares ``x.json`` with ``x.engine``)."""
    manifest = manifest_path(engine)
    if manifest.is_dir():
        raise PlanError(f"{manifest} is a directory, where the engine's manifest goes; remove it or choose another "
                        "--output")
    if not manifest.exists() and not manifest.is_symlink():
        return
    owner = described_engine(manifest)
    if owner is not None and owner != engine.name:
        raise PlanError(f"{manifest} is the manifest of another engine, {owner}, and {engine.name}'s manifest "
                        "would replace it; give the engine another --output name (refused even with --force)")
    if not force:
        raise PlanError(f"{manifest} exists, where {engine.name}'s manifest goes; pass --force to overwrite it, or "
                        "choose another --output")


def _checked_output(options: BuildOptions, stem: str, targets: tuple[str, ...], onnx: OnnxInfo) -> Path:
    """The engine path (refused if it exists without ``--force``), caches and the calibration shape checked."""
    precision = options.precision
    output = Path(options.output) if options.output else default_engine(stem, precision, targets)
    if output.suffix.lower() not in (".engine", ".plan", ".trt"):
        raise PlanError(f"{output}: engine files end in .engine (the runtime picks the backend from the extension)")
    inputs = {"the ONNX the engine is built from": onnx.path}
    if options.weights is not None:
        inputs["the checkpoint (--weights)"] = Path(options.weights)
    check_output(output, force=options.force, error=PlanError, suffix=".engine", inputs=inputs, option="--output")
    check_not_input(manifest_path(output), inputs, error=PlanError, option="the engine's manifest")
    _check_manifest_path(output, options.force)
    taken = {**inputs, "the engine (--output)": output, "the engine's manifest": manifest_path(output)}
    for option, cache, suffix in (("--timing-cache", options.timing_cache, ".bin"),
                                  ("--calibration-cache", options.calibration_cache, ".calib")):
        if cache:  # read and updated in place: it may exist, but must be a file in a writable folder
            # TensorRT would write its cache over any of the build's other files
            check_output(cache, force=True, error=PlanError, suffix=suffix, inputs=taken, option=option)
            taken[f"the {option.removeprefix('--')} ({option})"] = Path(cache)
    if options.calibrate:
        if problem := batch_problem(*options.calibration_shape):
            raise PlanError(f"--calibration-shape {shape_text(options.calibration_shape)}: {problem}")
        c, _, h, w = nchw(options.calibration_shape)
        if h % onnx.size_multiple or w % onnx.size_multiple:
            raise PlanError(f"--calibration-shape {shape_text(options.calibration_shape)}: height and width must be "
                            f"multiples of {onnx.size_multiple}")
    return output
