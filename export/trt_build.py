"""Build TensorRT / TensorRT for RTX engines from the exported ONNX: plan, validate, build, manifest, drift.

The library behind ``export/build_trt.py``. Everything that needs neither TensorRT nor a GPU (which ONNX, the
optimisation profile against the ONNX's dynamic dimensions and the network's size multiple, what each runtime
and target can do, the ``trtexec`` line) is decided by :func:`make_plan` and refused there with the reason,
before any build. :func:`build_serialized` is the only code that calls the builder; it follows NVIDIA's
documented Python API, identical for ``tensorrt`` (10.x and 11.x) and ``tensorrt_rtx`` except where noted:

* TensorRT 10.x, weakly typed (default there): FP32 ONNX, ``BuilderFlag.FP16`` for FP16; INT8 from the Q/DQ
  ONNX with ``BuilderFlag.INT8`` (+FP16), or implicit calibration (``IInt8EntropyCalibrator2``, with a cache).
* TensorRT 11+ (no weak typing, no calibrators), TensorRT for RTX, or ``--strongly-typed`` on 10.x: a strongly
  typed network, precision from the ONNX itself (the FP16 export of ``to_onnx.py --fp16``, or the Q/DQ ONNX).
* TensorRT for RTX builds ahead of time without a GPU, for compute capability targets (``--target sm75``);
  timing caches are no-ops there (kernels are compiled just in time; the runtime keeps a runtime cache).

:func:`parse_onnx` runs NVIDIA's ONNX parser alone (no GPU, nothing built) with whichever TensorRT is
installed: ``calibration.quantize`` refuses a ``trt`` INT8 file it rejects, and a dry run checks the build's ONNX.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from banet.artifacts import engine_path, failed_path, int8_onnx_path
from banet.artifacts import onnx_path as exported_onnx_path
from banet.checkpoint import file_sha256
from banet.conventions import BANET, METADATA_PREFIX
from banet.manifest import (
    FLAVOUR_NAMES,
    FLAVOURS,
    HARDWARE_COMPATIBILITY,
    INSTALL_HINTS,
    RTX_DEFAULT_TARGETS,
    RTX_KNOWN_TARGETS,
    EngineManifest,
    Profile,
    commit_pair,
    discard_staged,
    manifest_path,
    read_manifest,
    settle_pair,
    stage_pair,
    target_to_cc,
)
from banet.metadata import ModelMetadata
from banet.outputs import check_input, check_output, write_atomic, write_error
from banet.outputs import shown_path as show

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: Default optimisation profile (N, H, W): 256x256 up to 1080p, batches up to 4.
DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = (1, 256, 256), (1, 720, 1280), (4, 1080, 1920)
#: Shapes the engine is compared with ONNX Runtime FP32 on right after the build (those inside the profile).
DRIFT_SHAPES = ((1, 256, 256), (2, 256, 384), (1, 720, 1280))
#: Drift below this (PSNR vs ONNX Runtime FP32, dB) fails the build: the engine is kept as <name>.failed.engine.
MIN_PSNR_DB = {"fp32": 70.0, "fp16": 40.0, "int8": 25.0}
#: Export defaults of export/to_onnx.py, for validating a plan whose ONNX will be exported first.
EXPORT_MIN_SIZE, EXPORT_MAX_SIZE = 8, 4096
INT8_COMMAND = "python -m calibration.quantize --flavour trt"


class PlanError(ValueError):
    """A build request that cannot work; the message says why and what to do instead. Raised before building."""


class BuildError(RuntimeError):
    """TensorRT refused or failed the build (the message carries its first error)."""


class RuntimeMissingError(RuntimeError):
    """The requested TensorRT flavour (or a GPU it needs) is not on this machine; one line with install hints."""


# -- which TensorRT ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT flavour a build uses; ``module`` is None where it is not installed (dry runs still plan)."""

    flavour: str
    module: object | None = None
    version: str | None = None

    @property
    def major(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None

    @property
    def label(self) -> str:
        return f"{FLAVOUR_NAMES[self.flavour]} {self.version or '(not installed)'}"


def _import(flavour: str):
    try:
        module = importlib.import_module(FLAVOURS[flavour])
        return module, str(module.__version__)
    except Exception:  # ImportError, or a broken install (e.g. PyPI's download stub): treated as missing
        return None, None


def detect_runtime(requested: str = "auto", precision: str | None = None) -> RuntimeInfo:
    """``auto``: TensorRT if installed, else TensorRT for RTX, else (not installed) TensorRT.

    For ``precision="int8"`` ``auto`` means TensorRT only: TensorRT for RTX has no INT8 convolutions (see
    :func:`make_plan`), so an INT8 plan is TensorRT's, installed or not.
    """
    if requested not in ("auto", *FLAVOURS):
        raise PlanError(f"unknown runtime {requested!r}; choose auto, tensorrt or tensorrt-rtx")
    candidates = (("tensorrt",) if precision == "int8" else FLAVOURS) if requested == "auto" else (requested,)
    for flavour in candidates:
        module, version = _import(flavour)
        if module is not None:
            return RuntimeInfo(flavour, module, version)
    return RuntimeInfo("tensorrt" if requested == "auto" else requested)


# -- shapes and ONNX -----------------------------------------------------------------------------------------------
def parse_shape(text: str) -> tuple[int, int, int]:
    """``"NxHxW"``, ``"HxW"`` (batch 1) or ``"Nx3xHxW"`` -> (N, H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (2, 3, 4):
        raise ValueError(f"expected a shape NxHxW, HxW or Nx3xHxW such as 1x720x1280, got {text!r}")
    values = [int(p) for p in parts]
    if len(values) == 4:
        if values[1] != 3:
            raise ValueError(f"{text!r}: BANet takes 3 channels, got {values[1]}")
        values = [values[0], values[2], values[3]]
    if len(values) == 2:
        values = [1, *values]
    return tuple(values)


def nchw(shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (shape[0], 3, shape[1], shape[2])


def shape_text(shape: Iterable[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


@dataclass(frozen=True)
class OnnxInfo:
    """What the plan needs to know about the ONNX a build starts from."""

    path: Path
    exists: bool
    metadata: ModelMetadata | None
    input_name: str
    #: the input's dimensions: an int where static, the dimension's name where dynamic
    input_dims: tuple
    qdq_nodes: int = 0
    sha256: str | None = None
    size: int = 0
    metadata_note: str = ""

    @property
    def precision(self) -> str:
        if self.qdq_nodes:
            return "int8"
        return self.metadata.precision if self.metadata else "fp32"

    @property
    def min_size(self) -> int:
        return self.metadata.min_size if self.metadata else EXPORT_MIN_SIZE

    @property
    def max_size(self) -> int:
        return self.metadata.max_size if self.metadata else EXPORT_MAX_SIZE

    @property
    def size_multiple(self) -> int:
        return self.metadata.conventions.size_multiple if self.metadata else BANET.size_multiple


def read_onnx_info(path: Path, fallback_metadata: Path | None = None) -> OnnxInfo:
    """Read the input signature, Q/DQ node count and banet metadata of an ONNX file (weights not loaded).

    A quantized ONNX whose tool dropped the ``banet.*`` metadata borrows it from ``fallback_metadata`` (the FP32
    ONNX it was made from), noted in ``metadata_note``.
    """
    from banet.metadata import read_onnx_metadata
    from export.onnx_file import check_banet_graph, load_onnx

    path = Path(path)
    note = ""
    try:
        model = load_onnx(path)
        try:
            metadata = ModelMetadata.from_props({e.key: e.value for e in model.metadata_props}, str(path))
        except (KeyError, ValueError):
            if fallback_metadata is None or not Path(fallback_metadata).is_file():
                raise
            metadata = read_onnx_metadata(fallback_metadata)
            note = f"banet metadata taken from {fallback_metadata} ({path.name} carries none)"
        check_banet_graph(model, metadata, str(path))
    except (FileNotFoundError, KeyError, ValueError) as exc:  # ArtifactError is a ValueError
        raise PlanError(str(exc).strip("'\"")) from None
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        raise PlanError(f"{path}: expected one network input, found {[i.name for i in inputs]}")
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise PlanError(f"{path}: input {inputs[0].name!r} has {len(dims)} dimensions, expected NCHW")
    qdq = sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    return OnnxInfo(path, True, metadata, inputs[0].name, dims, qdq, file_sha256(path), path.stat().st_size, note)


def read_given_onnx(path: Path, fallback_metadata: Path | None, precision: str, weights: Path | None) -> OnnxInfo:
    """The ``--onnx`` a user named: it must be there (never exported under a mistyped name), with the command
    that makes it when it is not."""
    if not Path(path).exists():
        make = (f"{INT8_COMMAND} --output {show(path)}" if precision == "int8" else
                f"{export_command(weights, precision)} --output {show(path)}")
        raise PlanError(f"{path}: ONNX file not found; make it with {make}")
    return read_onnx_info(path, fallback_metadata)


def expected_onnx_info(path: Path, precision: str) -> OnnxInfo:
    """The ONNX ``export/to_onnx.py`` will write (dynamic N, H, W, its default size bounds)."""
    return OnnxInfo(Path(path), False, None, "input", ("batch", 3, "height", "width"),
                    metadata_note=f"not there yet: exported first ({precision}) by the build")


def validate_profile(minimum: tuple, opt: tuple, maximum: tuple, onnx: OnnxInfo) -> Profile:
    """Check (N, H, W) min/opt/max against each other, the ONNX's dimensions and the network's size multiple."""
    names = ("batch", "height", "width")
    for label, shape in (("--min", minimum), ("--opt", opt), ("--max", maximum)):
        if len(shape) != 3 or any(int(v) < 1 for v in shape):
            raise PlanError(f"{label} {shape_text(shape)}: every dimension must be >= 1")
    for i, name in enumerate(names):
        if not minimum[i] <= opt[i] <= maximum[i]:
            raise PlanError(f"profile {name}: need min <= opt <= max, got {minimum[i]} / {opt[i]} / {maximum[i]} "
                            f"(--min {shape_text(minimum)} --opt {shape_text(opt)} --max {shape_text(maximum)})")
    multiple = onnx.size_multiple
    for label, shape in (("--min", minimum), ("--opt", opt), ("--max", maximum)):
        for i in (1, 2):
            if shape[i] % multiple:
                raise PlanError(f"{label} {shape_text(shape)}: {names[i]} {shape[i]} is not a multiple of "
                                f"{multiple}, which BANet needs (one stride-2 stage down and up); use "
                                f"{shape[i] + (-shape[i]) % multiple}")
    onnx_dims = (onnx.input_dims[0], onnx.input_dims[2], onnx.input_dims[3])
    if isinstance(onnx.input_dims[1], int) and onnx.input_dims[1] != 3:
        raise PlanError(f"{onnx.path}: input has {onnx.input_dims[1]} channels, BANet takes 3")
    for i, name in enumerate(names):
        dim = onnx_dims[i]
        if isinstance(dim, int) and dim > 0:
            if not minimum[i] == opt[i] == maximum[i] == dim:
                raise PlanError(f"{onnx.path.name} has a static {name} of {dim}: the profile must use {dim} for it "
                                f"(min/opt/max {name} given: {minimum[i]}/{opt[i]}/{maximum[i]})")
        elif i > 0:
            lo, hi = onnx.min_size, onnx.max_size
            if minimum[i] < lo or maximum[i] > hi:
                raise PlanError(f"profile {name} {minimum[i]}..{maximum[i]} is outside the {lo}..{hi} the ONNX "
                                f"was exported and verified for (re-export with --min-size/--max-size)")
    return Profile(onnx.input_name, nchw(minimum), nchw(opt), nchw(maximum))


def parse_targets(text: str | None) -> tuple[str, ...]:
    """``"sm75,sm86"`` -> ("sm75", "sm86"); also accepts ``7.5`` and ``75``. Unknown targets are refused."""
    if not text:
        return ()
    targets = []
    for raw in text.replace(" ", "").split(","):
        if not raw:
            continue
        item = raw.lower()
        if "." in item and item.replace(".", "").isdigit():
            item = "sm" + item.replace(".", "")
        elif item.isdigit():
            item = "sm" + item
        try:
            target_to_cc(item)
        except ValueError as exc:
            raise PlanError(f"unknown target {raw!r}: {exc}; TensorRT for RTX targets are "
                            f"{', '.join(RTX_KNOWN_TARGETS)}") from exc
        if item not in RTX_KNOWN_TARGETS:
            raise PlanError(f"unknown target {raw!r}: TensorRT for RTX compiles for {', '.join(RTX_KNOWN_TARGETS)} "
                            "(sm75 Turing, e.g. RTX 2080 Ti; sm86 Ampere; sm89 Ada; sm120 Blackwell RTX)")
        if item not in targets:
            targets.append(item)
    return tuple(targets)


# -- the plan ------------------------------------------------------------------------------------------------------
@dataclass
class BuildOptions:
    """What the user asked for (command-line options, as a library call)."""

    precision: str = "fp32"
    onnx: Path | None = None
    weights: Path | None = None
    output: Path | None = None
    force: bool = False
    targets: tuple[str, ...] = ()
    min_shape: tuple[int, int, int] = DEFAULT_MIN
    opt_shape: tuple[int, int, int] = DEFAULT_OPT
    max_shape: tuple[int, int, int] = DEFAULT_MAX
    workspace_mib: int | None = None
    optimization_level: int = 3
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    strongly_typed: bool = False
    tf32: bool = False
    calibrate: bool = False
    calibration_cache: Path | None = None
    calibration_shape: tuple[int, int, int] = (1, 256, 256)
    calibration_batches: int = 32
    drift_shapes: tuple[tuple[int, int, int], ...] = DRIFT_SHAPES
    min_psnr_db: float | None = None
    progress: bool = True


@dataclass
class BuildPlan:
    """Everything decided before building; :meth:`describe` is what ``--dry-run`` prints."""

    options: BuildOptions
    runtime: RuntimeInfo
    precision: str
    strongly_typed: bool
    onnx: OnnxInfo
    output: Path
    profile: Profile
    targets: tuple[str, ...]
    builder_flags: list[str]
    weights: Path | None
    drift_shapes: list[tuple[int, int, int]]
    reference_onnx: Path | None
    notes: list[str] = field(default_factory=list)
    export_precision: str | None = None  # set when the ONNX must be exported first
    missing: str | None = None  # an input the user must create first (dry runs only)

    @property
    def manifest(self) -> Path:
        return manifest_path(self.output)

    @property
    def needs_gpu(self) -> bool:
        """TensorRT proper builds on the GPU it targets; TensorRT for RTX compiles ahead of time on the CPU."""
        return self.runtime.flavour == "tensorrt"

    def describe(self) -> str:
        o = self.options
        lines = [f"build plan ({self.precision.upper()}, {self.runtime.label})"]
        onnx_state = (f"sha256 {self.onnx.sha256[:12]}..., {self.onnx.size / 1e6:.1f} MB" if self.onnx.exists
                      else self.onnx.metadata_note)
        lines.append(f"  onnx:        {show(self.onnx.path)} ({onnx_state})")
        if self.onnx.exists and self.onnx.metadata_note:
            lines.append(f"               {self.onnx.metadata_note}")
        if self.export_precision:
            lines.append(f"               export first: {export_command(self.weights, self.export_precision)}")
        lines.append(f"  engine:      {show(self.output)}   manifest: {show(self.manifest)}")
        p = self.profile
        lines.append(f"  profile:     {p.input} min {shape_text(p.min)}  opt {shape_text(p.opt)}  max "
                     f"{shape_text(p.max)}")
        typing = "strongly typed (precision from the ONNX)" if self.strongly_typed else "weakly typed"
        lines.append(f"  network:     {typing}; builder flags: {', '.join(self.builder_flags) or 'none'}")
        if self.runtime.flavour == "tensorrt-rtx":
            lines.append(f"  targets:     {', '.join(self.targets) if self.targets else 'default (' + ', '.join(RTX_DEFAULT_TARGETS) + ' and later)'}")  # noqa: E501
        lines.append(f"  optimisation level {o.optimization_level}; workspace "
                     f"{str(o.workspace_mib) + ' MiB' if o.workspace_mib else 'TensorRT default'}; timing cache "
                     f"{o.timing_cache or 'none'}")
        compat = []
        if o.version_compatible:
            compat.append("version-compatible")
        if o.hardware_compatibility != "none":
            compat.append(f"hardware-compatible ({o.hardware_compatibility})")
        if compat:
            lines.append(f"  compatibility: {', '.join(compat)}")
        if o.calibrate:
            lines.append(f"  INT8 calibration: entropy calibrator, {o.calibration_batches} batches of "
                         f"{shape_text(nchw(o.calibration_shape))}, cache {show(calibration_cache_path(self))}")
        lines.append(f"  drift check: {', '.join(shape_text(s) for s in self.drift_shapes)} vs ONNX Runtime FP32 "
                     f"({show(self.reference_onnx)}), needs a GPU; fail below "
                     f"{self.min_psnr_db:.0f} dB")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.missing:
            lines.append(f"  MISSING INPUT: {self.missing}")
        lines.append("  equivalent command line:")
        lines.append("    " + trtexec_command(self))
        lines.append(f"  rebuild command: {rebuild_command(self)}")
        return "\n".join(lines)

    @property
    def min_psnr_db(self) -> float:
        return self.options.min_psnr_db if self.options.min_psnr_db is not None else MIN_PSNR_DB[self.precision]


def default_onnx(stem: str, precision: str, strongly_typed: bool, calibrate: bool) -> Path:
    """Which exported ONNX a build starts from: FP16 ONNX only for strongly typed FP16; Q/DQ ONNX for INT8."""
    if precision == "int8" and not calibrate:
        return int8_onnx_path(exported_onnx_path(stem), "trt")
    if precision == "fp16" and strongly_typed:
        return exported_onnx_path(stem, "fp16")
    return exported_onnx_path(stem)


def default_engine(stem: str, precision: str, targets: tuple[str, ...]) -> Path:
    """:func:`banet.artifacts.engine_path`: ``<weights stem>_<precision>[_<targets>].engine``."""
    return engine_path(stem, precision, targets)


def export_command(weights: Path | None, precision: str) -> str:
    from banet.defaults import DEFAULT_WEIGHTS

    parts = ["python", "export/to_onnx.py"]
    if weights is not None and Path(weights).resolve() != DEFAULT_WEIGHTS.resolve():
        parts += ["--weights", show(weights)]
    if precision == "fp16":
        parts.append("--fp16")
    return shlex.join(parts)


def calibration_cache_path(plan: BuildPlan) -> Path:
    return plan.options.calibration_cache or plan.output.with_suffix(".calib")


def _stale_onnx(onnx: OnnxInfo, weights: Path | None) -> str | None:
    from banet.metadata import stale_source

    return stale_source(onnx.metadata, show(onnx.path), weights) if onnx.metadata is not None else None


def _weights_stem(options: BuildOptions) -> tuple[str, Path | None]:
    if options.weights is not None:
        return Path(options.weights).stem, Path(options.weights)
    if options.onnx is not None and Path(options.onnx).is_file():
        try:
            info = read_onnx_info(Path(options.onnx))
            return Path(info.metadata.source_name).stem, None
        except PlanError:
            return Path(options.onnx).stem, None
    from banet.defaults import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS.stem, DEFAULT_WEIGHTS


def make_plan(options: BuildOptions, runtime: RuntimeInfo, allow_missing_input: bool = False) -> BuildPlan:
    """Decide and validate everything that needs neither TensorRT nor a GPU; PlanError with the reason.

    ``allow_missing_input`` (dry runs): a missing INT8 Q/DQ ONNX is recorded in ``plan.missing`` instead of
    refused, and the profile is checked against the bounds the exporter gives it.
    """
    precision = options.precision
    if precision not in PRECISIONS:
        raise PlanError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    flavour = runtime.flavour
    rtx = flavour == "tensorrt-rtx"
    notes: list[str] = []
    targets = tuple(options.targets)
    # -- what the runtime can do ----------------------------------------------------------------------------------
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
    if options.workspace_mib is not None and options.workspace_mib < 1:
        raise PlanError(f"--workspace must be a positive number of MiB, got {options.workspace_mib}")
    if runtime.module is None and flavour == "tensorrt" and not strongly_typed and not options.calibrate:
        notes.append("TensorRT is not installed here, so its version is unknown: this is the TensorRT 10.x plan "
                     "(weakly typed); on TensorRT 11+ the build is strongly typed, from the "
                     + ("FP16 ONNX" if precision == "fp16" else "Q/DQ ONNX" if precision == "int8" else "same ONNX"))
    if rtx and options.timing_cache:
        notes.append("timing caches are no-ops in TensorRT for RTX (kernels are compiled just in time on the "
                     "user's GPU; the runtime backend keeps a runtime cache instead): --timing-cache ignored")
    if rtx and not targets:
        notes.append("no --target: the engine runs on Ampere and later RTX GPUs (sm86, sm89, sm120...), not on "
                     "Turing (RTX 20xx): for an RTX 2080 Ti use --fp16 --target sm75")

    # -- which ONNX ----------------------------------------------------------------------------------------------
    if options.weights is not None:
        check_input(options.weights, error=PlanError, what="checkpoint file")
    stem, weights = _weights_stem(options)
    onnx_path = Path(options.onnx) if options.onnx else default_onnx(stem, precision, strongly_typed,
                                                                     options.calibrate)
    export_precision: str | None = None
    fp32_sibling = exported_onnx_path(stem) if options.onnx is None else None
    if options.onnx is not None or onnx_path.is_file():
        made_as = "fp32" if precision == "fp16" and not strongly_typed else precision
        onnx = read_given_onnx(onnx_path, fp32_sibling, made_as, weights) if options.onnx is not None else \
            read_onnx_info(onnx_path, fallback_metadata=fp32_sibling)
        stale = _stale_onnx(onnx, weights) if options.onnx is None else None
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
    profile = validate_profile(options.min_shape, options.opt_shape, options.max_shape, onnx)

    # -- builder flags -------------------------------------------------------------------------------------------
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

    # -- output ------------------------------------------------------------------------------------------------------
    output = Path(options.output) if options.output else default_engine(stem, precision, targets)
    if output.suffix.lower() not in (".engine", ".plan", ".trt"):
        raise PlanError(f"{output}: engine files end in .engine (the runtime picks the backend from the extension)")
    check_output(output, force=options.force, error=PlanError, suffix=".engine")
    for cache, suffix in ((options.timing_cache, ".bin"), (options.calibration_cache, ".calib")):
        if cache:  # read and updated in place: it may exist, but must be a file in a writable folder
            check_output(cache, force=True, error=PlanError, suffix=suffix)
    if options.calibrate:
        c, _, h, w = nchw(options.calibration_shape)
        if h % onnx.size_multiple or w % onnx.size_multiple:
            raise PlanError(f"--calibration-shape {shape_text(options.calibration_shape)}: height and width must be "
                            f"multiples of {onnx.size_multiple}")

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


def parser_check(plan: BuildPlan) -> str:
    """Parse the plan's ONNX with the TensorRT-family parser installed here, whatever runtime the plan is for.

    What a dry run adds to the plan: NVIDIA's parser is the first thing a build runs, and a file it refuses
    (e.g. an int32 bias DequantizeLinear) should stop the plan, not the build on the GPU machine. Returns the
    line to print; raises PlanError naming the node and the parser's reason. Nothing is renamed: a dry run
    changes no file (``calibration.quantize`` never keeps a file the parser refuses).
    """
    if not plan.onnx.exists:
        return "TensorRT parser check: skipped (the ONNX is exported first by the build)"
    report = parse_onnx(plan.onnx.path)
    if report is None:
        return "TensorRT parser check: skipped (neither tensorrt nor tensorrt_rtx is installed here)"
    if not report.ok:
        fix = f"; re-quantize it: {INT8_COMMAND} --force" if plan.onnx.qdq_nodes else ""
        raise PlanError(f"the ONNX parser of {report.parser} refuses {show(plan.onnx.path)} at "
                        f"{report.first_error()}{fix}")
    return f"TensorRT parser check: {report.parser} parses {plan.onnx.path.name} ({report.layers} layers)"


# -- equivalent command lines -------------------------------------------------------------------------------------
def trtexec_command(plan: BuildPlan) -> str:
    """The ``trtexec`` (TensorRT) or ``tensorrt_rtx`` (TensorRT for RTX) line that builds the same engine.

    ``tensorrt_rtx`` takes trtexec's ``--onnx/--saveEngine/--min|opt|maxShapes/--skipInference`` and, for an
    ahead-of-time build, ``--computeCapabilities=75,...`` (TensorRT for RTX docs: "Compute capability
    configuration"); it has no precision flags, as its networks are strongly typed.
    """
    o, p = plan.options, plan.profile
    rtx = plan.runtime.flavour == "tensorrt-rtx"
    args = ["tensorrt_rtx" if rtx else "trtexec", f"--onnx={show(plan.onnx.path)}", f"--saveEngine={show(plan.output)}"]
    args += [f"--minShapes={p.input}:{shape_text(p.min)}", f"--optShapes={p.input}:{shape_text(p.opt)}",
             f"--maxShapes={p.input}:{shape_text(p.max)}"]
    if rtx:
        if plan.targets:
            args.append("--computeCapabilities=" + ",".join(t[2:] for t in plan.targets))
    else:
        if plan.strongly_typed:
            args.append("--stronglyTyped")
        if "FP16" in plan.builder_flags:
            args.append("--fp16")
        if "INT8" in plan.builder_flags:
            args.append("--int8")
        if o.calibrate:
            args.append(f"--calib={show(calibration_cache_path(plan))}")
        if "no TF32" in plan.builder_flags:
            args.append("--noTF32")
        args.append(f"--builderOptimizationLevel={o.optimization_level}")
        if o.workspace_mib:
            args.append(f"--memPoolSize=workspace:{o.workspace_mib}M")
        if o.timing_cache:
            args.append(f"--timingCacheFile={o.timing_cache}")
        if o.version_compatible:
            args.append("--versionCompatible")
        if o.hardware_compatibility != "none":
            level = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}
            args.append(f"--hardwareCompatibilityLevel={level[o.hardware_compatibility]}")
    args.append("--skipInference")
    line = shlex.join(args)
    if o.calibrate:
        line += "   # trtexec reads an existing calibration cache; the first build writes it"
    return line


def rebuild_command(plan: BuildPlan) -> str:
    """The ``export/build_trt.py`` line that builds this engine again (stored in the manifest)."""
    o = plan.options
    args = ["python", "export/build_trt.py"]
    if plan.precision != "fp32":
        args.append(f"--{plan.precision}")
    args += ["--runtime", plan.runtime.flavour]
    if plan.targets:
        args += ["--target", ",".join(plan.targets)]
    if o.onnx is not None:
        args += ["--onnx", show(o.onnx)]
    elif o.weights is not None:
        args += ["--weights", show(o.weights)]
    if o.output is not None:
        args += ["--output", show(o.output)]
    p = plan.profile
    if (p.min, p.opt, p.max) != (nchw(DEFAULT_MIN), nchw(DEFAULT_OPT), nchw(DEFAULT_MAX)):
        args += ["--min", shape_text(p.min[:1] + p.min[2:]), "--opt", shape_text(p.opt[:1] + p.opt[2:]),
                 "--max", shape_text(p.max[:1] + p.max[2:])]
    if o.strongly_typed and plan.runtime.flavour == "tensorrt":
        args.append("--strongly-typed")
    if o.calibrate:
        args.append("--calibrate")
    if o.version_compatible:
        args.append("--version-compatible")
    if o.hardware_compatibility != "none":
        args += ["--hardware-compatible", o.hardware_compatibility]
    args.append("--force")
    return shlex.join(args)


# -- calling TensorRT ----------------------------------------------------------------------------------------------
def _make_logger(trt, echo: bool, quiet: bool = False):
    """A logger that keeps TensorRT's errors (the first one becomes the failure message).

    ``quiet``: errors are only kept, not logged (a conformance parse reports them in one line of its own).
    """

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))
                if not quiet:
                    log.error("[%s] %s", "TensorRT", msg)
            elif severity == trt.ILogger.Severity.WARNING and echo:
                log.debug("[TensorRT] %s", msg)

    return _Logger()


def _make_progress_monitor(trt, stream=None):
    """An ``IProgressMonitor`` that prints the top build phases with elapsed time (TensorRT 10+ / RTX)."""
    stream = stream or sys.stderr

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started = time.perf_counter()
            self.depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.depth[phase_name] = depth
            if depth <= 1:
                print(f"  [{time.perf_counter() - self.started:6.1f} s] {'  ' * depth}{phase_name}", file=stream,
                      flush=True)

        def step_complete(self, phase_name, step) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            self.depth.pop(phase_name, None)

    return _Progress()


# -- parsing: the conformance check of every ONNX meant for TensorRT --------------------------------------------
#: Lines TensorRT for RTX adds to parser errors on a machine without a GPU driver: noise, never the reason.
_NOISE = ("Cuda Runtime", "cudaError", "CUDA driver")


def _reason(text: str, node: str) -> str:
    """The parser's reason in one line: without the "Invalid Node" header, source locations and the node name.

    ``ITensor::getDimensions: Error Code 4: API Usage Error (N: input has type Int32 but ... UInt8. In checkType
    at /_src/...cpp:456)`` -> ``input has type Int32 but ... UInt8``
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Invalid Node") and not any(n in line for n in _NOISE)]
    reason = (useful or lines or ["no reason given"])[0]
    wrapped = re.search(r"Error Code \d+: [^(]*\((.*)\)\s*$", reason)
    if wrapped:
        reason = wrapped.group(1)
    reason = re.sub(r"\s*In \w+ at \S+$", "", reason).strip().rstrip(".")
    if node and reason.startswith(f"{node}: "):
        reason = reason[len(node) + 2:]
    return reason


def _parser_errors(parser, logger) -> list[str]:
    """One ``node <name>: <reason>`` line per parser error (TensorRT's logger where the parser gave none)."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = str(error.node_name()) if hasattr(error, "node_name") else ""
        reason = _reason(error.desc(), node)
        if reason.startswith("Invalid Node") or reason == "no reason given":  # the detail went to the logger
            reason = next((_reason(e, node) for e in logger.errors if node and node in e), reason)
        errors.append(f"node {node}: {reason}" if node else reason)
    if not errors:
        errors = [_reason(e, "") for e in logger.errors if not any(n in e for n in _NOISE)][:1]
    return errors or ["no error reported"]


def _parse_into(trt, network, logger, path: Path) -> tuple[object, list[str]]:
    """Parse ``path`` into ``network``; (the parser, which owns converted weights, and its errors, [] if none)."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return parser, []
    return parser, _parser_errors(parser, logger)


def _one_line(errors: list[str]) -> str:
    """The first error, and how many more there are."""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return errors[0].replace("\n", " ") + more


@dataclass(frozen=True)
class ParseReport:
    """What a TensorRT-family ONNX parser said about one file."""

    parser: str
    layers: int
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def first_error(self) -> str:
        """The first ``node <name>: <reason>`` (and how many more): the one line a refusal prints."""
        return _one_line(list(self.errors))


def installed_runtime() -> RuntimeInfo | None:
    """The TensorRT-family module installed here (TensorRT first, else TensorRT for RTX), or None."""
    runtime = detect_runtime("auto")
    return runtime if runtime.module is not None else None


def parse_onnx(path: Path, runtime: RuntimeInfo | None = None) -> ParseReport | None:
    """Parse ``path`` with NVIDIA's ONNX parser of ``runtime`` (default: the installed one); None if none is.

    The network is strongly typed where the runtime builds it so (TensorRT 11+, TensorRT for RTX), as the build
    would be. Nothing is built and no GPU is needed; TensorRT's messages are kept, not printed.
    """
    runtime = runtime or installed_runtime()
    if runtime is None or runtime.module is None:
        return None
    trt = runtime.module
    logger = _make_logger(trt, echo=False, quiet=True)
    builder = trt.Builder(logger)
    flags = 0
    strongly = runtime.flavour == "tensorrt-rtx" or (runtime.major or 0) >= 11
    if strongly and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser, errors = _parse_into(trt, network, logger, Path(path))
    layers = int(network.num_layers)
    del parser
    return ParseReport(runtime.label, layers, tuple(errors))


def batches_from_reader(reader) -> Iterator[np.ndarray]:
    """NCHW float32 batches from an ONNX Runtime ``CalibrationDataReader`` (``get_next() -> {name: array}``)."""
    while True:
        item = reader.get_next()
        if item is None:
            return
        yield np.asarray(next(iter(item.values())), dtype=np.float32)


def _fit(batch: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Centre-crop (and cycle the batch) to the calibration shape the engine's calibration profile fixes."""
    n, c, h, w = shape
    if batch.ndim != 4 or batch.shape[1] != c or batch.shape[2] < h or batch.shape[3] < w:
        raise BuildError(f"calibration batch of shape {batch.shape} cannot be cropped to {shape_text(shape)}")
    y, x = (batch.shape[2] - h) // 2, (batch.shape[3] - w) // 2
    crop = batch[:, :, y:y + h, x:x + w]
    reps = -(-n // len(crop))
    return np.ascontiguousarray(np.concatenate([crop] * reps)[:n], dtype=np.float32)


def make_entropy_calibrator(trt, batches: Iterable[np.ndarray], shape: tuple[int, int, int, int], cache: Path):
    """An ``IInt8EntropyCalibrator2`` (TensorRT 10) fed by any iterable of NCHW float32 batches, with a cache file.

    Where ``cache`` exists, TensorRT reads it and skips calibration; after calibrating it is written.
    """
    from runtime.backends.cuda import DeviceBuffer, check, import_cudart

    cudart = import_cudart()

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.buffer = DeviceBuffer(cudart)
            self.count = 0

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names):
            try:
                batch = _fit(next(self.batches), shape)
            except StopIteration:
                return None
            ptr = self.buffer.ensure(batch.nbytes)
            check(cudart, cudart.cudaMemcpy(ptr, batch.ctypes.data, batch.nbytes,
                                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
            self.count += 1
            return [ptr]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            try:
                write_atomic(cache, bytes(data))
            except OSError as exc:  # raised inside TensorRT's callback it would abort the build: say it instead
                log.warning("calibration cache not written: %s", write_error(exc, cache, len(data)))

    return _EntropyCalibrator()


def default_calibration_batches(plan: BuildPlan) -> Iterator[np.ndarray]:
    """Batches for ``--calibrate``: the calibration work's data (``calibration.data``) where it is installed,
    else deterministic real-photo inputs. Either way a plain iterable of NCHW float32 batches."""
    n, h, w = plan.options.calibration_shape
    count = plan.options.calibration_batches
    try:
        from calibration import data as calibration_data

        source = calibration_data.CalibrationSource(count=count * n, size=(h, w), batch=n)
        log.info("INT8 calibration data: %s", source.describe())
        return batches_from_reader(source.reader())
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        log.info("INT8 calibration data: %d real-photo batches (calibration.data unavailable: %s)", count, exc)
    from export.parity import photo_batch

    return (photo_batch(n, h, w, seed=1000 + i) for i in range(count))


def _save_timing_cache(path: Path, data: bytes) -> None:
    """Update the timing cache whole or not at all; a cache that cannot be written only costs the next build time."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        log.warning("timing cache not updated: %s", write_error(exc, path, len(data)))


def build_serialized(plan: BuildPlan, trt, calibration_batches: Iterable[np.ndarray] | None = None,
                     progress_stream=None) -> tuple[bytes, dict]:
    """Build the engine with ``trt`` (the ``tensorrt`` or ``tensorrt_rtx`` module). Returns (plan bytes, details).

    Raises BuildError with TensorRT's first error when parsing or building fails.
    """
    o = plan.options
    rtx = plan.runtime.flavour == "tensorrt-rtx"
    logger = _make_logger(trt, echo=False)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser, errors = _parse_into(trt, network, logger, plan.onnx.path)  # the parser owns weights: keep it alive
    if errors:
        raise BuildError(f"the ONNX parser of {plan.runtime.label} refused {show(plan.onnx.path)} at "
                         f"{_one_line(errors)}")
    config = builder.create_builder_config()
    if o.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, o.workspace_mib << 20)
    config.builder_optimization_level = o.optimization_level
    for name in plan.builder_flags:
        if name == "no TF32":
            if hasattr(trt.BuilderFlag, "TF32"):
                config.clear_flag(trt.BuilderFlag.TF32)
        else:
            config.set_flag(getattr(trt.BuilderFlag, name))
    if o.hardware_compatibility != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, o.hardware_compatibility.upper())
    if rtx and plan.targets:
        config.num_compute_capabilities = len(plan.targets)
        for index, target in enumerate(plan.targets):
            if not config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), index):
                raise BuildError(f"{plan.runtime.label} refused target {target}")
    profile = builder.create_optimization_profile()
    p = plan.profile
    profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    calibrator = None
    if o.calibrate:
        shape = nchw(o.calibration_shape)
        batches = calibration_batches if calibration_batches is not None else default_calibration_batches(plan)
        calibrator = make_entropy_calibrator(trt, batches, shape, calibration_cache_path(plan))
        config.int8_calibrator = calibrator
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(p.input, shape, shape, shape)
        config.set_calibration_profile(calibration_profile)
    timing_cache = None
    if o.timing_cache and not rtx:
        data = o.timing_cache.read_bytes() if o.timing_cache.is_file() else b""
        timing_cache = config.create_timing_cache(data)
        config.set_timing_cache(timing_cache, False)
    if o.progress and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _make_progress_monitor(trt, progress_stream)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if calibrator is not None:
        calibrator.buffer.free()
    if serialized is None:
        first = logger.errors[0] if logger.errors else "no error reported"
        raise BuildError(f"{plan.runtime.label} could not build the engine: {first}")
    if timing_cache is not None:
        _save_timing_cache(o.timing_cache, bytes(config.get_timing_cache().serialize()))
    details = {"seconds": round(seconds, 2), "layers": network.num_layers}
    return bytes(serialized), details


# -- the whole build -----------------------------------------------------------------------------------------------
def export_missing_onnx(plan: BuildPlan) -> BuildPlan:
    """Export the ONNX the plan starts from when it is not there yet (verified by the exporter), then re-plan."""
    if plan.export_precision is None:
        return plan
    from banet.checkpoint import load_checkpoint
    from export.onnx_export import ExportOptions, export_onnx

    weights = plan.weights
    if weights is None:
        raise PlanError(f"{plan.onnx.path} is missing and no --weights were given to export it from")
    log.info("exporting %s first (%s)", plan.onnx.path, export_command(weights, plan.export_precision))
    loaded = load_checkpoint(weights)
    # force: only reached for a missing ONNX or, with --force, one exported from other weights (see make_plan)
    export_onnx(loaded.model, plan.onnx.path, ExportOptions(precision=plan.export_precision, force=True),
                loaded.sha256, Path(weights).name, loaded.config)
    return make_plan(plan.options, plan.runtime)


def ensure_runnable(plan: BuildPlan) -> dict | None:
    """Raise RuntimeMissingError (one line, install hints) if the flavour or a GPU it needs is missing.

    Returns the build machine's GPU (name, compute capability) or None (TensorRT for RTX without a GPU).
    """
    flavour = plan.runtime.flavour
    if plan.runtime.module is None:
        raise RuntimeMissingError(f"{FLAVOUR_NAMES[flavour]} is not installed here (module "
                                  f"{FLAVOURS[flavour]}): {INSTALL_HINTS[flavour]}"
                                  + ("; or build without a GPU with TensorRT for RTX (--runtime tensorrt-rtx, RTX "
                                     "GPUs only)" if flavour == "tensorrt" and plan.precision != "int8" else ""))
    from runtime.backends.cuda import CudaUnavailableError, gpu_info

    try:
        gpu = gpu_info(0)
    except CudaUnavailableError as exc:
        if plan.needs_gpu:
            raise RuntimeMissingError(f"TensorRT builds engines on the GPU they are for, and there is none here "
                                      f"({exc}); run this on the target GPU machine, or build ahead of time for RTX "
                                      "GPUs with --runtime tensorrt-rtx") from exc
        return None
    return {"name": gpu.name, "compute_capability": list(gpu.compute_capability)}


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path.resolve())


def measure_drift(plan: BuildPlan, engine: Path) -> dict:
    """Engine vs ONNX Runtime FP32 on the plan's drift shapes (needs a GPU to run the engine)."""
    from export.onnx_export import onnxruntime_forward
    from export.parity import compare
    from runtime.backends.tensorrt import TensorRTBackend

    reference = plan.reference_onnx
    if reference is None or not reference.is_file():
        return {"skipped": f"no FP32 ONNX at {reference} to compare with (export it with export/to_onnx.py)"}
    with TensorRTBackend(engine, check_onnx=False) as backend:
        report = compare(onnxruntime_forward(reference), backend.run, plan.drift_shapes, plan.min_psnr_db, None,
                         reference_name=f"ONNX Runtime FP32 ({reference.name})",
                         candidate_name=f"{plan.runtime.label} {plan.precision.upper()} on {backend.gpu.name}")
    log.info("drift right after the build:\n%s", report.table())
    result = report.to_dict()
    result["worst_psnr_db"] = round(report.worst_psnr_db, 2)
    result["passed"] = report.passed
    return result


def new_manifest(plan: BuildPlan, data: bytes, details: dict, gpu: dict | None) -> EngineManifest:
    """The manifest of freshly built engine bytes (its drift is measured after the engine is written)."""
    o = plan.options
    return EngineManifest(
        engine=plan.output.name, engine_sha256=hashlib.sha256(data).hexdigest(), engine_bytes=len(data),
        runtime=plan.runtime.flavour, runtime_version=plan.runtime.version, precision=plan.precision,
        profiles=[plan.profile.to_dict()],
        onnx={"path": _relative(plan.onnx.path, plan.output.parent), "sha256": plan.onnx.sha256,
              "bytes": plan.onnx.size, "precision": plan.onnx.precision},
        metadata={k: v for k, v in plan.onnx.metadata.to_props().items() if k.startswith(METADATA_PREFIX)},
        build={"strongly_typed": plan.strongly_typed, "builder_flags": plan.builder_flags,
               "optimization_level": o.optimization_level, "workspace_mib": o.workspace_mib,
               "timing_cache": str(o.timing_cache) if o.timing_cache and plan.runtime.flavour == "tensorrt" else None,
               "calibration": ({"cache": str(calibration_cache_path(plan)), "shape": list(nchw(o.calibration_shape))}
                               if o.calibrate else None),
               "seconds": details["seconds"], "network_layers": details["layers"],
               "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": platform.node(), "python": platform.python_version(),
               "trtexec_equivalent": trtexec_command(plan)},
        gpu=gpu, targets=list(plan.targets), version_compatible=o.version_compatible,
        hardware_compatibility=o.hardware_compatibility, rebuild_command=rebuild_command(plan))


def _drift_after_build(plan: BuildPlan, staged: Path, gpu: dict | None,
                       measure: Callable[[BuildPlan, Path], dict] | None) -> dict:
    """Drift of the staged engine, or why it was not measured (a new engine has no earlier measurement to keep)."""
    if gpu is None:
        return {"skipped": "no GPU on the build machine (ahead-of-time TensorRT for RTX build); run "
                           f"python export/build_trt.py --check {show(plan.output)} on the target GPU"}
    if measure is None:
        return {}
    try:
        return measure(plan, staged)
    except Exception as exc:  # the engine is built; a GPU that cannot run it is recorded, not hidden
        return {"skipped": f"could not run the engine here: {str(exc).splitlines()[0]}"}


def _keep_failed(plan: BuildPlan, staged: Path, manifest: EngineManifest) -> Path:
    """A build that drifts past the threshold: its staged pair becomes ``<name>.failed.engine`` (+ manifest), for
    inspection. The committed pair, an earlier good engine, is not touched."""
    failed = failed_path(plan.output)
    manifest.engine = failed.name
    try:
        manifest.write(manifest_path(failed))
        os.replace(staged, failed)
    except OSError as exc:
        raise BuildError(write_error(exc, failed)) from exc
    finally:
        discard_staged(plan.output)
    return failed


def _settle(engine: Path) -> None:
    """Before building: complete or discard what a killed build left next to ``engine`` (banet.manifest)."""
    try:
        if settle_pair(engine):
            log.info("completed the replacement of %s that an interrupted build left half done", show(engine))
    except OSError as exc:
        raise BuildError(f"cannot clean up what an earlier build left next to {engine}: {exc}") from exc


def _stage(plan: BuildPlan, data: bytes, manifest: EngineManifest) -> Path:
    """Write the new pair under staged names; BuildError (one line, nothing left behind) if it cannot be written."""
    try:
        return stage_pair(plan.output, data, manifest)
    except OSError as exc:
        raise BuildError(write_error(exc, plan.output, len(data))) from exc


def _commit(plan: BuildPlan, staged: Path, manifest: EngineManifest) -> None:
    """Record the drift in the staged manifest, then swap the pair in (BuildError if that cannot be written)."""
    try:
        manifest.write(manifest_path(staged))
        commit_pair(plan.output)
    except OSError as exc:
        if staged.exists():  # not committed: the old pair stands; leave nothing of the new one
            discard_staged(plan.output)
        raise BuildError(write_error(exc, plan.output)) from exc


def build(plan: BuildPlan, calibration_batches: Iterable[np.ndarray] | None = None,
          measure: Callable[[BuildPlan, Path], dict] | None = measure_drift) -> tuple[Path, EngineManifest]:
    """Build, write the engine and its manifest, measure drift where a GPU is present.

    The engine and its manifest replace an existing pair together (``banet.manifest``: staged under
    ``<name>.partial.engine`` / ``.partial.json``, drift measured there, then swapped in): a build killed at any
    point, a full disk, or a failed drift check leaves the previous pair as it was. Raises RuntimeMissingError /
    PlanError / BuildError; a build that drifts past the threshold is left as ``<name>.failed.engine`` (with its
    manifest) and raises BuildError.
    """
    if plan.missing:
        raise PlanError(plan.missing)
    gpu = ensure_runnable(plan)
    plan = export_missing_onnx(plan)
    _settle(plan.output)
    log.info("building %s with %s from %s", plan.output, plan.runtime.label, plan.onnx.path)
    data, details = build_serialized(plan, plan.runtime.module, calibration_batches)
    manifest = new_manifest(plan, data, details, gpu)
    staged = _stage(plan, data, manifest)
    manifest.drift = _drift_after_build(plan, staged, gpu, measure)
    if manifest.drift.get("passed") is False:
        failed = _keep_failed(plan, staged, manifest)
        raise BuildError(f"the engine drifts from ONNX Runtime FP32 beyond {plan.min_psnr_db:.0f} dB (worst "
                         f"{manifest.drift['worst_psnr_db']:.1f} dB); left at {failed} for inspection"
                         + (f", {show(plan.output)} unchanged" if plan.output.exists() else ""))
    _commit(plan, staged, manifest)
    return plan.output, manifest


def drift_reference(engine: Path, manifest: EngineManifest) -> Path:
    """The FP32 ONNX an engine is compared with: the ONNX it was built from when that is FP32, else the FP32
    export of the same weights next to it (``<weights stem>.onnx``, as :func:`make_plan` names it)."""
    onnx_path = (Path(engine).parent / str(manifest.onnx.get("path", ""))).resolve()
    if manifest.onnx.get("precision") == "fp32":
        return onnx_path
    source = manifest.metadata.get(METADATA_PREFIX + "source_name", onnx_path.name)
    return onnx_path.with_name(Path(source).stem + ".onnx")


def check_reference(reference: Path, engine: Path, manifest: EngineManifest) -> None:
    """PlanError (one line, with the command that makes it) unless ``reference`` is the FP32 ONNX export of the
    weights the engine was built from: comparing with anything else would record a meaningless drift."""
    from banet.defaults import DEFAULT_WEIGHTS
    from banet.metadata import ArtifactError, read_onnx_metadata

    source = manifest.metadata.get(METADATA_PREFIX + "source_name", "")
    weights = None if source in ("", DEFAULT_WEIGHTS.name) else Path(source)
    make = (f"export it with {export_command(weights, 'fp32')} --output {show(reference)}, or name it with "
            "--onnx FILE")
    cannot = f"cannot measure the drift of {show(engine)}"
    try:
        metadata = read_onnx_metadata(reference)
    except FileNotFoundError as exc:
        missing = f"no FP32 ONNX at {show(reference)} to compare with" if not reference.exists() else str(exc)
        raise PlanError(f"{cannot}: {missing}; {make}") from None
    except ArtifactError as exc:
        raise PlanError(f"{cannot}: {exc}") from None
    if metadata.precision != "fp32":
        raise PlanError(f"{cannot}: {show(reference)} is a {metadata.precision.upper()} ONNX, the reference must be "
                        f"the FP32 export; {make}")
    recorded = manifest.metadata.get(METADATA_PREFIX + "source_sha256")
    if recorded and metadata.source_sha256 != recorded:
        raise PlanError(f"{cannot}: {show(reference)} was exported from other weights than the engine (sha256 "
                        f"{metadata.source_sha256[:12]}... vs {recorded[:12]}...); {make}")


def _gpu_here(engine: Path) -> None:
    """RuntimeMissingError unless a CUDA GPU is here to run ``engine``."""
    from runtime.backends.cuda import CudaUnavailableError, gpu_info

    try:
        gpu_info(0)
    except CudaUnavailableError as exc:
        raise RuntimeMissingError(f"cannot measure the drift of {show(engine)} here: {str(exc).splitlines()[0]}; "
                                  "run --check on a machine with the GPU it is for") from None


def check_engine(engine: Path, reference_onnx: Path | None = None,
                 shapes: Iterable[tuple[int, int, int]] = DRIFT_SHAPES) -> EngineManifest:
    """Run an engine built elsewhere (e.g. ahead of time) on this GPU and record its drift in its manifest.

    Whatever would keep the drift from being measured (no engine or manifest, no FP32 reference ONNX, its
    TensorRT or a GPU missing, an engine that does not run) is refused in one line (ManifestError, PlanError,
    RuntimeMissingError, BuildError) and the manifest is left as it was: only a new measurement replaces an
    earlier one.
    """
    engine = Path(engine)
    manifest = read_manifest(engine)
    reference = Path(reference_onnx) if reference_onnx else drift_reference(engine, manifest)
    check_reference(reference, engine, manifest)
    runtime = RuntimeInfo(manifest.runtime, *_import(manifest.runtime))
    if runtime.module is None:
        raise RuntimeMissingError(f"cannot measure the drift of {show(engine)}: it needs "
                                  f"{FLAVOUR_NAMES[manifest.runtime]}, not installed here: "
                                  f"{INSTALL_HINTS[manifest.runtime]}")
    _gpu_here(engine)
    p = manifest.profile
    fits = [s for s in shapes if all(p.min[i] <= v <= p.max[i] for i, v in zip((0, 2, 3), s))] or \
        [(p.opt[0], p.opt[2], p.opt[3])]
    stub = BuildPlan(BuildOptions(precision=manifest.precision), runtime, manifest.precision,
                     manifest.build.get("strongly_typed", True),
                     OnnxInfo(reference, True, None, p.input, ()), engine, p,
                     tuple(manifest.targets), [], None, fits, reference)
    try:
        drift = measure_drift(stub, engine)
    except Exception as exc:  # TensorRT, CUDA or the backend refusing: nothing measured, nothing recorded
        raise BuildError(f"could not run {show(engine)} here: {str(exc).splitlines()[0]}") from exc
    if "skipped" in drift:
        raise PlanError(f"cannot measure the drift of {show(engine)}: {drift['skipped']}")
    manifest.drift = drift
    try:
        manifest.write(manifest_path(engine))
    except OSError as exc:
        raise BuildError(write_error(exc, manifest_path(engine))) from exc
    return manifest


def summary(manifest: EngineManifest, path: Path) -> str:
    drift = manifest.drift
    drift_text = (f"drift vs ONNX Runtime FP32 {drift['worst_psnr_db']:.1f} dB" if "worst_psnr_db" in drift
                  else f"drift not measured ({drift.get('skipped', 'unknown')})")
    targets = f", targets {manifest.describe_targets()}" if manifest.runtime == "tensorrt-rtx" else ""
    return (f"wrote {show(path)} ({manifest.engine_bytes / 1e6:.1f} MB, {manifest.precision}, "
            f"{FLAVOUR_NAMES[manifest.runtime]} {manifest.runtime_version}{targets}) in "
            f"{manifest.build['seconds']:.1f} s; {drift_text}; manifest {show(manifest_path(path))}")


def manifest_json(manifest: EngineManifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2)
