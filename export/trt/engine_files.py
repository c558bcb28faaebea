"""From plan to files: export a missing ONNX, build, measure drift against ONNX Runtime, write the engine and its
manifest as a pair, and ``--check`` an existing engine."""


from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shlex
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from banet.artifacts import failed_path
from banet.conventions import METADATA_PREFIX
from banet.manifest import (
    FLAVOUR_NAMES,
    FLAVOURS,
    INSTALL_HINTS,
    RTX_DEFAULT_TARGETS,
    EngineManifest,
    build_lock,
    commit_pair,
    discard_staged,
    manifest_path,
    read_manifest,
    settle_pair,
    stage_pair,
)
from banet.outputs import shown_path as show
from banet.outputs import write_error
from export.artifact_chain import export_command, export_hint, fresh_fp32_name
from export.onnx_file import writing
from export.trt.onnx_info import OnnxInfo, nchw
from export.trt.plan import (
    DRIFT_SHAPES,
    BuildOptions,
    BuildPlan,
    calibration_cache_path,
    polygraphy_command,
    rebuild_command,
    trtexec_command,
)
from export.trt.planner import make_plan
from export.trt.polygraphy_build import build_serialized
from export.trt.runtime_info import BuildError, PlanError, RuntimeInfo, RuntimeMissingError, import_tensorrt

log = logging.getLogger(__name__)


def export_missing_onnx(plan: BuildPlan) -> BuildPlan:
    """Export the ONNX the plan starts from when it is not there yet (verified by the exporter), then re-plan."""
    if plan.export_precision is None:
        return plan
    from export.artifact_chain import exported_onnx

    weights = plan.weights
    if weights is None:
        raise PlanError(f"{plan.onnx.path} is missing and no --weights were given to export it from")
    log.info("exporting %s first (%s)", plan.onnx.path, export_command(weights, plan.export_precision))
    # replace_stale: only reached for a missing ONNX or, with --force, one exported from other weights (make_plan)
    exported_onnx(weights, plan.export_precision, plan.onnx.path, replace_stale=True)
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
    """Engine vs ONNX Runtime FP32 on the plan's drift shapes, as a Polygraphy comparison (``TrtRunner`` on the
    engine's bytes vs ``OnnxrtRunner`` on the FP32 ONNX, our PSNR criterion as the compare function; needs a GPU
    to run the engine)."""
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from export.polygraphy_compare import compare_runners, onnxruntime_runner
    from export.trt.polygraphy_build import polygraphy_backend
    from runtime.backends.cuda import gpu_info

    reference = plan.reference_onnx
    if reference is None or not reference.is_file():
        return {"skipped": f"no FP32 ONNX at {reference} to compare with (export it with export/to_onnx.py)"}
    polygraphy_backend(plan.runtime.flavour)
    candidate = TrtRunner(EngineFromBytes(Path(engine).read_bytes()), name="engine")
    report = compare_runners(onnxruntime_runner(reference, "onnxruntime-fp32"), candidate, plan.drift_shapes,
                             plan.min_psnr_db, input_name=plan.profile.input,
                             reference_name=f"ONNX Runtime FP32 ({reference.name})",
                             candidate_name=f"{plan.runtime.label} {plan.precision.upper()} on {gpu_info(0).name}")
    log.info("drift right after the build:\n%s", report.table())
    result = report.to_dict()
    result["worst_psnr_db"] = round(report.worst_psnr_db, 2)
    result["passed"] = report.passed
    result["compared_with"] = "Polygraphy Comparator (TrtRunner vs OnnxrtRunner)"
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
               "builder": details.get("builder"), "seconds": details["seconds"], "network_layers": details["layers"],
               "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": platform.node(), "python": platform.python_version(),
               "trtexec_equivalent": trtexec_command(plan), "polygraphy_equivalent": polygraphy_command(plan)},
        gpu=gpu, targets=list(plan.targets), version_compatible=o.version_compatible,
        hardware_compatibility=o.hardware_compatibility, rebuild_command=rebuild_command(plan))


def _drift_after_build(plan: BuildPlan, staged: Path, gpu: dict | None,
                       measure: Callable[[BuildPlan, Path], dict] | None) -> dict:
    """Drift of the staged engine, or why it was not measured (a new engine has no earlier measurement to keep)."""
    if gpu is None:
        return {"skipped": "no GPU on the build machine (ahead-of-time TensorRT for RTX build); run "
                           f"python export/build_trt.py --check {shlex.quote(show(plan.output))} on the target GPU"}
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


def _exclusive(engine: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the build lock of ``engine`` (banet.manifest.build_lock); BuildError in one line if it is taken."""
    return writing(engine, BuildError, lock=build_lock)


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
    with _exclusive(plan.output):
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
    from banet.metadata import ArtifactError, read_onnx_metadata

    source = manifest.metadata.get(METADATA_PREFIX + "source_name", "")
    recorded = manifest.metadata.get(METADATA_PREFIX + "source_sha256")
    # never the user's own file (a given FP16 or other-weights ONNX) as the export's --output
    output = reference if not reference.exists() else (fresh_fp32_name(reference) or reference.with_name(
        f"{Path(source).stem or 'model'}_reference.onnx"))
    make = f"export it with {export_hint(None, 'fp32', output, source, recorded)}, or name it with --onnx FILE"
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


def checked_manifest(engine: Path) -> EngineManifest:
    """:func:`banet.manifest.read_manifest`, which checks the nested fields ``--check`` reads too (a manifest edited
    by hand): ManifestError, one line naming them, instead of a TypeError halfway through a measurement."""
    return read_manifest(engine)


def check_engine(engine: Path, reference_onnx: Path | None = None,
                 shapes: Iterable[tuple[int, int, int]] = DRIFT_SHAPES) -> EngineManifest:
    """Run an engine built elsewhere (e.g. ahead of time) on this GPU and record its drift in its manifest.

    Whatever would keep the drift from being measured (no engine or manifest, no FP32 reference ONNX, its
    TensorRT or a GPU missing, an engine that does not run) is refused in one line (ManifestError, PlanError,
    RuntimeMissingError, BuildError) and the manifest is left as it was: only a new measurement replaces an
    earlier one.
    """
    engine = Path(engine)
    manifest = checked_manifest(engine)
    reference = Path(reference_onnx) if reference_onnx else drift_reference(engine, manifest)
    check_reference(reference, engine, manifest)
    runtime = RuntimeInfo(manifest.runtime, *import_tensorrt(manifest.runtime))
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


#: What each TensorRT for RTX target is, in the words a user buys GPUs in.
TARGET_GPUS = {"sm75": "Turing RTX 20xx, e.g. the RTX 2080 Ti", "sm80": "A100-class Ampere",
               "sm86": "Ampere RTX 30xx / A-series", "sm89": "Ada RTX 40xx", "sm120": "Blackwell RTX 50xx",
               "sm121": "Blackwell GB10"}


def runs_on(manifest: EngineManifest) -> str:
    """Which GPUs an engine runs on, from its manifest (printed after every build)."""
    if manifest.runtime == "tensorrt-rtx":
        if manifest.targets:
            return "runs on " + "; ".join(f"{t} ({TARGET_GPUS.get(t, 'RTX')})" for t in manifest.targets) + " only"
        return ("runs on Ampere and later RTX GPUs (" + ", ".join(RTX_DEFAULT_TARGETS) + "), NOT on Turing "
                "(RTX 2080 Ti: build --fp16 --target sm75)")
    gpu = manifest.gpu or {}
    cc = ".".join(map(str, gpu.get("compute_capability", []))) or "unknown"
    if manifest.hardware_compatibility == "ampere_plus":
        return "runs on Ampere and later GPUs (hardware-compatible)"
    if manifest.hardware_compatibility == "same_compute_capability":
        return f"runs on GPUs of compute capability {cc}"
    return f"runs on {gpu.get('name', 'the build GPU')} (compute capability {cc}) only"


def summary(manifest: EngineManifest, path: Path) -> str:
    drift = manifest.drift
    drift_text = (f"drift vs ONNX Runtime FP32 {drift['worst_psnr_db']:.1f} dB" if "worst_psnr_db" in drift
                  else f"drift not measured ({drift.get('skipped', 'unknown')})")
    targets = f", targets {manifest.describe_targets()}" if manifest.runtime == "tensorrt-rtx" else ""
    return (f"wrote {show(path)} ({manifest.engine_bytes / 1e6:.1f} MB, {manifest.precision}, "
            f"{FLAVOUR_NAMES[manifest.runtime]} {manifest.runtime_version}{targets}) in "
            f"{manifest.build['seconds']:.1f} s; {drift_text}; manifest {show(manifest_path(path))}\n"
            f"the engine {runs_on(manifest)}")


def manifest_json(manifest: EngineManifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2)
