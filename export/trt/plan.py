"""What a build will do: :class:`BuildOptions` (the request), :class:`BuildPlan` (every decision that needs neither
TensorRT nor a GPU), default file names, and the command lines a plan prints: the equivalent ``trtexec`` call and
the ``build_trt.py`` line that rebuilds an engine."""


from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from banet.artifacts import engine_path, int8_onnx_path
from banet.artifacts import onnx_path as exported_onnx_path
from banet.manifest import (
    RTX_DEFAULT_TARGETS,
    Profile,
    manifest_path,
)
from banet.outputs import shown_path as show
from banet.precision import MIN_PSNR_DB
from export.artifact_chain import export_command
from export.trt.onnx_info import (
    DEFAULT_MAX,
    DEFAULT_MIN,
    DEFAULT_OPT,
    OnnxInfo,
    nchw,
    read_onnx_info,
    shape_text,
)
from export.trt.runtime_info import PlanError, RuntimeInfo

log = logging.getLogger(__name__)


#: Shapes the engine is compared with ONNX Runtime FP32 on right after the build (those inside the profile).
DRIFT_SHAPES = ((1, 256, 256), (2, 256, 384), (1, 720, 1280))




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
        lines.append("  the same build with Polygraphy's command line:")
        lines.append("    " + polygraphy_command(self))
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


def calibration_cache_path(plan: BuildPlan) -> Path:
    return plan.options.calibration_cache or plan.output.with_suffix(".calib")


def stale_onnx(onnx: OnnxInfo, weights: Path | None) -> str | None:
    from banet.metadata import stale_source

    return stale_source(onnx.metadata, show(onnx.path), weights) if onnx.metadata is not None else None


def weights_stem(options: BuildOptions) -> tuple[str, Path | None]:
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


def polygraphy_command(plan: BuildPlan) -> str:
    """The ``polygraphy convert`` line that builds the same engine through the same Polygraphy loaders.

    For TensorRT for RTX it starts with ``POLYGRAPHY_USE_TENSORRT_RTX=1`` (Polygraphy picks the flavour from that
    variable) and has no precision flags (RTX networks are strongly typed; ``convert --fp16`` is dropped there).
    Two settings of ours have no ``convert`` option: TF32 off for RTX FP32 builds and a calibration profile that is
    not an optimisation profile (``--calibrate``); the line says so in a comment.
    """
    o, p = plan.options, plan.profile
    rtx = plan.runtime.flavour == "tensorrt-rtx"

    def dims(shape) -> str:
        return f"{p.input}:[{','.join(map(str, shape))}]"

    args = ["polygraphy", "convert", show(plan.onnx.path), "--convert-to", "trt", "-o", show(plan.output),
            "--trt-min-shapes", dims(p.min), "--trt-opt-shapes", dims(p.opt), "--trt-max-shapes", dims(p.max)]
    if rtx and plan.targets:
        args += ["--compute-capabilities", *(f"{t[2:-1]}.{t[-1]}" for t in plan.targets)]
    if plan.strongly_typed and not rtx:
        args.append("--strongly-typed")
    if not rtx:
        args += [f"--{name.lower()}" for name in ("FP16", "INT8") if name in plan.builder_flags]
        if "no TF32" not in plan.builder_flags:
            args.append("--tf32")
    args += ["--builder-optimization-level", str(o.optimization_level)]
    if o.workspace_mib:
        args += ["--pool-limit", f"workspace:{o.workspace_mib}M"]
    if o.version_compatible:
        args.append("--version-compatible")
    if o.hardware_compatibility != "none":
        args += ["--hardware-compatibility-level", o.hardware_compatibility]
    if o.timing_cache and not rtx:
        args += ["--load-timing-cache", str(o.timing_cache), "--save-timing-cache", str(o.timing_cache)]
    if o.calibrate:
        args += ["--data-loader-script", "export/polygraphy_data.py:load_data", "--calibration-cache",
                 show(calibration_cache_path(plan))]
    line = ("POLYGRAPHY_USE_TENSORRT_RTX=1 " if rtx else "") + shlex.join(args)
    if rtx and "no TF32" in plan.builder_flags:
        line += "   # build_trt.py also turns TF32 off (convert has no switch for it with TensorRT for RTX)"
    if o.calibrate:
        line += "   # Polygraphy calibrates on its last profile; build_trt.py on a fixed calibration shape"
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
    # both where both were given: the engine is named after --weights, its graph read from --onnx (with --onnx
    # alone the line built another engine, named after the ONNX's recorded source, and left this one stale)
    if o.onnx is not None:
        args += ["--onnx", show(o.onnx)]
    if o.weights is not None:
        args += ["--weights", show(o.weights)]
    if o.output is not None:
        args += ["--output", show(o.output)]
    p = plan.profile
    if (p.min, p.opt, p.max) != (nchw(DEFAULT_MIN), nchw(DEFAULT_OPT), nchw(DEFAULT_MAX)):
        args += ["--min", shape_text(p.min[:1] + p.min[2:]), "--opt", shape_text(p.opt[:1] + p.opt[2:]),
                 "--max", shape_text(p.max[:1] + p.max[2:])]
    # every option that changes what is built (TF32 changes an FP32 engine's numbers; the level and workspace its
    # kernels) or how it is checked, so the line builds the same engine
    if o.workspace_mib is not None:
        args += ["--workspace", str(o.workspace_mib)]
    if o.optimization_level != BuildOptions.optimization_level:
        args += ["--optimization-level", str(o.optimization_level)]
    if o.timing_cache is not None:
        args += ["--timing-cache", show(o.timing_cache)]
    if o.tf32:
        args.append("--tf32")
    if o.min_psnr_db is not None:
        args += ["--min-psnr", f"{o.min_psnr_db:g}"]
    if o.strongly_typed and plan.runtime.flavour == "tensorrt":
        args.append("--strongly-typed")
    if o.calibrate:
        args.append("--calibrate")
        if o.calibration_cache is not None:
            args += ["--calibration-cache", show(o.calibration_cache)]
        if o.calibration_shape != BuildOptions.calibration_shape:
            args += ["--calibration-shape", shape_text(o.calibration_shape)]
    if o.version_compatible:
        args.append("--version-compatible")
    if o.hardware_compatibility != "none":
        args += ["--hardware-compatible", o.hardware_compatibility]
    args.append("--force")
    return shlex.join(args)
