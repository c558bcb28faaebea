"""Engine builds through NVIDIA Polygraphy's loaders: the same ``NetworkFromOnnxPath`` -> ``CreateConfig`` (or
``CreateConfigRTX`` with compute capabilities) -> ``EngineBytesFromNetwork`` chain that ``polygraphy convert``
runs, for TensorRT 10/11 and TensorRT for RTX.

:func:`build_loaders` only *constructs* the loaders from a :class:`~export.trt.plan.BuildPlan` (nothing runs, no
TensorRT call is made), so tests can check precision, profiles, calibrator and caches where TensorRT cannot be
installed; :func:`run_build` runs them. What stays ours, each for a need Polygraphy does not cover:

* the plan itself (profile checks, refusals, ``--dry-run``, the trtexec line, the manifest);
* a fixed-shape INT8 calibration profile that is *not* also an optimisation profile of the engine (Polygraphy
  calibrates with its last optimisation profile, which would add a second profile to every calibrated engine):
  a ``PostprocessConfig`` sets it;
* the progress display (an ``IProgressMonitor`` handed to ``CreateConfig(progress_monitor=...)``);
* one-line failure messages: Polygraphy's log is routed into Python logging for the build, TensorRT's first
  error becomes the ``BuildError``, and a parse failure is explained node by node by
  :func:`export.trt.builder.parse_onnx`.

Polygraphy chooses TensorRT or TensorRT for RTX once per process: ``polygraphy.config.USE_TENSORRT_RTX`` (from
``POLYGRAPHY_USE_TENSORRT_RTX``) is read when ``polygraphy.backend.trt`` is first imported. :func:`polygraphy_backend`
sets it from the plan before that import and refuses a second flavour in the same process with one line.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from banet.outputs import shown_path as show
from export.trt.builder import BUILD_INTERRUPTED
from export.trt.onnx_info import nchw, shape_text
from export.trt.plan import BuildPlan, calibration_cache_path
from export.trt.runtime_info import BuildError, RuntimeMissingError, installed_runtime

log = logging.getLogger(__name__)

#: How to get Polygraphy (the rtx and tensorrt extras bring it).
POLYGRAPHY_HINT = ("pip install 'banet-deploy[rtx]' (TensorRT for RTX) or 'banet-deploy[tensorrt]', or "
                   "pip install polygraphy")


def polygraphy_version() -> str | None:
    """The installed Polygraphy's version, or None."""
    try:
        import polygraphy
    except ImportError:
        return None
    return str(polygraphy.__version__)


def polygraphy_backend(flavour: str | None) -> tuple[ModuleType, ModuleType | None]:
    """Polygraphy's TensorRT backend set up for ``flavour``: (``polygraphy.backend.trt``, and
    ``polygraphy.backend.tensorrt_rtx`` when it drives TensorRT for RTX, else None).

    Call this before importing anything from Polygraphy: its first import fixes the flavour for the process.
    ``flavour`` None (a comparison that may not involve TensorRT at all): keep the process's choice, or make it
    for the installed flavour (TensorRT first, as :func:`~export.trt.runtime_info.installed_runtime`).
    Raises RuntimeMissingError without Polygraphy, BuildError if this process's Polygraphy already drives the
    other flavour.
    """
    try:
        from polygraphy import config as polygraphy_config
    except ImportError:
        raise RuntimeMissingError(f"engine builds and comparisons use NVIDIA Polygraphy, which is not installed "
                                  f"here: {POLYGRAPHY_HINT}") from None
    bound = "polygraphy.backend.trt" in sys.modules
    if flavour is None and not bound:
        installed = installed_runtime()
        flavour = installed.flavour if installed else None
    if flavour is not None:
        want_rtx = flavour == "tensorrt-rtx"
        if not bound:
            polygraphy_config.USE_TENSORRT_RTX = want_rtx
        elif bool(polygraphy_config.USE_TENSORRT_RTX) != want_rtx:
            driven = "TensorRT for RTX" if polygraphy_config.USE_TENSORRT_RTX else "TensorRT"
            raise BuildError(f"Polygraphy in this process already drives {driven} (it chooses once, when first "
                             f"imported; POLYGRAPHY_USE_TENSORRT_RTX); use {flavour} in a new process")
    backend = importlib.import_module("polygraphy.backend.trt")
    rtx = importlib.import_module("polygraphy.backend.tensorrt_rtx") if polygraphy_config.USE_TENSORRT_RTX else None
    return backend, rtx


@dataclass
class BuildLoaders:
    """Polygraphy loaders for one build, constructed but not run."""

    network: object  # NetworkFromOnnxPath
    create_config: object  # CreateConfig (TensorRT) or CreateConfigRTX (TensorRT for RTX)
    config: object  # create_config, or a PostprocessConfig around it (settings it has no option for)
    calibrator: object | None
    save_timing_cache: Path | None
    builder: str  # what made the engine, for the manifest: "Polygraphy 0.53.6 (EngineBytesFromNetwork)"


def _fit(batch: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Centre-crop (and cycle the batch) to the calibration shape the engine's calibration profile fixes."""
    n, c, h, w = shape
    if batch.ndim != 4 or batch.shape[1] != c or batch.shape[2] < h or batch.shape[3] < w:
        raise BuildError(f"calibration batch of shape {batch.shape} cannot be cropped to {shape_text(shape)}")
    y, x = (batch.shape[2] - h) // 2, (batch.shape[3] - w) // 2
    crop = batch[:, :, y:y + h, x:x + w]
    reps = -(-n // len(crop))
    return np.ascontiguousarray(np.concatenate([crop] * reps)[:n], dtype=np.float32)


def calibration_feeds(batches: Iterable[np.ndarray], name: str,
                      shape: tuple[int, int, int, int]) -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy's data-loader form (``{input name: NCHW float32}``) of any iterable of batches, fitted to
    the calibration shape."""
    for batch in batches:
        yield {name: _fit(np.asarray(batch, np.float32), shape)}


def build_loaders(plan: BuildPlan, trt, calibration_batches: Iterable[np.ndarray] | None = None,
                  progress_stream=None) -> BuildLoaders:
    """Construct Polygraphy's loaders for ``plan`` with ``trt`` (the module Polygraphy drives) for the enums.

    Nothing is built and TensorRT is not called: every decision (precision flags, profile, targets, workspace,
    optimisation level, compatibility, timing cache, calibrator) is visible on the returned objects.
    """
    from export.trt.builder import default_calibration_batches, make_progress_monitor

    backend, rtx_backend = polygraphy_backend(plan.runtime.flavour)
    o, p = plan.options, plan.profile
    rtx = plan.runtime.flavour == "tensorrt-rtx"
    network = backend.NetworkFromOnnxPath(str(plan.onnx.path), strongly_typed=plan.strongly_typed)
    common: dict = {
        "profiles": [backend.Profile().add(p.input, p.min, p.opt, p.max)],
        "builder_optimization_level": o.optimization_level,
    }
    if o.workspace_mib:
        common["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: o.workspace_mib << 20}
    if o.version_compatible:
        common["version_compatible"] = True
    if o.hardware_compatibility != "none":
        common["hardware_compatibility_level"] = getattr(trt.HardwareCompatibilityLevel,
                                                         o.hardware_compatibility.upper())
    timing_cache = o.timing_cache if o.timing_cache and not rtx else None  # RTX: timing caches are no-ops
    if timing_cache is not None:
        common["load_timing_cache"] = str(timing_cache)  # a missing file starts an empty cache
    if o.progress and hasattr(trt, "IProgressMonitor"):
        common["progress_monitor"] = make_progress_monitor(trt, progress_stream)
    no_tf32 = "no TF32" in plan.builder_flags
    steps = []  # PostprocessConfig steps, each for a setting CreateConfig / CreateConfigRTX does not take
    calibrator = None
    if rtx:
        capabilities = [(int(t[2:-1]), int(t[-1])) for t in plan.targets] or None  # "sm75" -> (7, 5)
        create_config = rtx_backend.CreateConfigRTX(compute_capabilities=capabilities, **common)
        if no_tf32:
            def clear_tf32(builder, network, built_config) -> None:
                """FP32 stays FP32 (CreateConfigRTX has no ``tf32`` option; TF32 is on by default)."""
                built_config.clear_flag(trt.BuilderFlag.TF32)

            steps.append(clear_tf32)
    else:
        if o.calibrate:
            shape = nchw(o.calibration_shape)
            batches = calibration_batches if calibration_batches is not None else default_calibration_batches(plan)
            calibrator = backend.Calibrator(calibration_feeds(batches, p.input, shape),
                                            cache=str(calibration_cache_path(plan)),
                                            BaseClass=trt.IInt8EntropyCalibrator2)
            common["calibrator"] = calibrator

            def fixed_calibration_profile(builder, network, built_config) -> None:
                """Calibrate at one fixed shape without adding it to the engine's optimisation profiles."""
                fixed = backend.Profile().add(p.input, shape, shape, shape)
                built_config.set_calibration_profile(fixed.to_trt(builder, network))

            steps.append(fixed_calibration_profile)
        create_config = backend.CreateConfig(fp16="FP16" in plan.builder_flags, int8="INT8" in plan.builder_flags,
                                             tf32=not no_tf32, **common)
    config = create_config
    if steps:
        def postprocess(builder, network, built_config) -> None:
            for step in steps:
                step(builder, network, built_config)

        postprocess.steps = steps  # what tests inspect
        config = backend.PostprocessConfig(create_config, postprocess)
    return BuildLoaders(network, create_config, config, calibrator, timing_cache,
                        f"Polygraphy {polygraphy_version()} (EngineBytesFromNetwork)")


class _Collect(logging.Handler):
    """Keeps what Polygraphy (and TensorRT through it) logs during a build; errors are re-logged as ours."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        text = message.split("] ", 1)[1] if message.startswith("[") and "] " in message else message
        if record.levelno >= logging.ERROR:
            self.errors.append(text)
            if not BUILD_INTERRUPTED.is_set():  # a build cancelled by Ctrl-C: its errors only say so
                log.error("[Polygraphy] %s", text)
        else:
            log.debug("[Polygraphy] %s", text)


@contextlib.contextmanager
def polygraphy_log() -> Iterator[_Collect]:
    """Route Polygraphy's log (warnings and errors only) into Python logging for the duration, and collect it.

    Polygraphy prints to stdout by default; a library must not. Its logger's settings are restored afterwards.
    """
    from polygraphy.logger import G_LOGGER

    saved = (G_LOGGER.use_python_logging_system, G_LOGGER.module_severity)
    python_logger = logging.getLogger("Polygraphy")
    saved_propagate = python_logger.propagate
    handler = _Collect()
    python_logger.addHandler(handler)
    python_logger.propagate = False
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.WARNING
    try:
        yield handler
    finally:
        python_logger.removeHandler(handler)
        python_logger.propagate = saved_propagate
        G_LOGGER.use_python_logging_system = saved[0]
        G_LOGGER.module_severity = saved[1]


def run_build(plan: BuildPlan, loaders: BuildLoaders) -> tuple[bytes, dict]:
    """Run the loaders: parse, build, serialise. Returns (engine bytes, details); BuildError in one line, and
    KeyboardInterrupt for a Ctrl-C during the build (TensorRT would swallow it: :func:`deferred_interrupt`)."""
    from polygraphy.exception import PolygraphyException

    from export.trt.builder import NOISE, build_stop, deferred_interrupt, parse_onnx

    backend, _ = polygraphy_backend(plan.runtime.flavour)
    with polygraphy_log() as collected, deferred_interrupt() as interrupted:
        try:
            built = loaders.network()
        except PolygraphyException as exc:
            if interrupted.is_set():
                raise build_stop() from None
            report = parse_onnx(plan.onnx.path, plan.runtime)
            reason = report.first_error() if report is not None and not report.ok else str(exc).splitlines()[0]
            raise BuildError(f"the ONNX parser of {plan.runtime.label} refused {show(plan.onnx.path)} at "
                             f"{reason}") from None
        layers = int(built[1].num_layers)
        engine = backend.EngineBytesFromNetwork(built, loaders.config,
                                                save_timing_cache=str(loaders.save_timing_cache)
                                                if loaders.save_timing_cache else None)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():  # Polygraphy sets an (empty) timing cache on every config; RTX warns
                warnings.filterwarnings("ignore", "Use Deprecated in TensorRT-RTX", DeprecationWarning)
                data = engine()
        except PolygraphyException as exc:
            if interrupted.is_set():  # the progress monitor cancelled the build
                raise build_stop() from None
            useful = [e for e in collected.errors if not any(n in e for n in NOISE)]
            first = (useful or [str(exc).splitlines()[0]])[0]
            raise BuildError(f"{plan.runtime.label} could not build the engine: {first}") from None
        finally:
            if loaders.calibrator is not None and hasattr(loaders.calibrator, "free"):
                loaders.calibrator.free()
        if interrupted.is_set():  # Ctrl-C after the last cancellable step: the engine is not kept either
            raise build_stop()
        seconds = time.perf_counter() - started
    return bytes(data), {"seconds": round(seconds, 2), "layers": layers, "builder": loaders.builder}


def build_serialized(plan: BuildPlan, trt, calibration_batches: Iterable[np.ndarray] | None = None,
                     progress_stream=None) -> tuple[bytes, dict]:
    """Build the plan's engine through Polygraphy with ``trt`` (the ``tensorrt`` or ``tensorrt_rtx`` module).

    Returns (engine bytes, details: build seconds, network layers, builder); BuildError with TensorRT's first
    error when parsing or building fails.
    """
    return run_build(plan, build_loaders(plan, trt, calibration_batches, progress_stream))
