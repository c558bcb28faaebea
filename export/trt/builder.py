"""NVIDIA's ONNX parser on its own (the dry run's and ``calibration.quantize``'s conformance check), the build's
progress display and its INT8 calibration data. The build itself runs through Polygraphy
(:mod:`export.trt.polygraphy_build`).

The parser check stays ours rather than Polygraphy's ``NetworkFromOnnxPath`` for two needs that loader does not
cover: it reports each refused node with its reason (Polygraphy folds them into one exception text), and it runs
the parser of whichever TensorRT flavour is installed, while Polygraphy drives one flavour per process."""


from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banet.outputs import shown_path as show
from export.trt.onnx_info import INT8_COMMAND
from export.trt.plan import BuildPlan
from export.trt.runtime_info import PlanError, RuntimeInfo, installed_runtime
from runtime.stop_signals import STOP_SIGNALS, raises_terminated, stop_exception

log = logging.getLogger(__name__)

#: Set by Ctrl-C (or SIGTERM, SIGHUP) while an engine is being built (:func:`deferred_interrupt`); the progress
#: monitor then cancels.
BUILD_INTERRUPTED = threading.Event()
#: The signal that set :data:`BUILD_INTERRUPTED` (SIGINT until one is received).
_RECEIVED = [signal.SIGINT]


def build_stop() -> KeyboardInterrupt:
    """What to raise once TensorRT has returned from a build :data:`BUILD_INTERRUPTED` cancelled: KeyboardInterrupt
    for Ctrl-C, ``runtime.stop_signals.Terminated`` for SIGTERM or SIGHUP (exit 143 or 129, as outside a build)."""
    return stop_exception(_RECEIVED[0])


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C, SIGTERM and SIGHUP while TensorRT builds, honoured.

    TensorRT calls back into Python during a build (its logger, the progress monitor) and swallows what those
    raise ("Exception caught in log(): KeyboardInterrupt", "... Terminated: 15"), so a plain Ctrl-C or a SIGTERM
    was lost and the build went on to replace the engine, exit 0. For the duration these signals only set
    :data:`BUILD_INTERRUPTED`: the progress monitor cancels the build at its next step, and the caller raises
    :func:`build_stop` once TensorRT has returned. Outside the main thread (no signal handlers there), a SIGINT
    that is ignored (a background job), and a SIGTERM or SIGHUP the command does not turn into an exception
    (:func:`runtime.stop_signals.stoppable`) are left as they are.
    """
    BUILD_INTERRUPTED.clear()
    _RECEIVED[0] = signal.SIGINT
    if threading.current_thread() is not threading.main_thread():
        yield BUILD_INTERRUPTED
        return
    deferred = [s for s in (signal.SIGINT,) if signal.getsignal(s) is not signal.SIG_IGN]
    deferred += [s for s in STOP_SIGNALS if raises_terminated(s)]

    def hold(signum: int, frame) -> None:
        if not BUILD_INTERRUPTED.is_set():
            _RECEIVED[0] = signum
        BUILD_INTERRUPTED.set()

    previous = {signum: signal.signal(signum, hold) for signum in deferred}
    try:
        yield BUILD_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def make_progress_monitor(trt, stream=None):
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
            return not BUILD_INTERRUPTED.is_set()  # False cancels the build (Ctrl-C: deferred_interrupt)

        def phase_finish(self, phase_name) -> None:
            self.depth.pop(phase_name, None)

    return _Progress()


#: Lines TensorRT for RTX adds to parser errors on a machine without a GPU driver: noise, never the reason.
NOISE = ("Cuda Runtime", "cudaError", "CUDA driver")


def _reason(text: str, node: str) -> str:
    """The parser's reason in one line: without the "Invalid Node" header, source locations and the node name.

    ``ITensor::getDimensions: Error Code 4: API Usage Error (N: input has type Int32 but ... UInt8. In checkType
    at /_src/...cpp:456)`` -> ``input has type Int32 but ... UInt8``
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Invalid Node") and not any(n in line for n in NOISE)]
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
        errors = [_reason(e, "") for e in logger.errors if not any(n in e for n in NOISE)][:1]
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
