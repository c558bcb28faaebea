"""OpenVINO backend: an exported ``.onnx`` (FP32, FP16 or INT8 Q/DQ) compiled by OpenVINO for the CPU.

OpenVINO reads the ONNX file directly. It compiles fastest code for one fixed input shape, and the runtime's
tiling and same-sized batches produce few distinct shapes, so by default each (N, H, W) is compiled once and kept
in a small least-recently-used cache (``static=False`` compiles the dynamic-shape model once instead; the
benchmark compares both). Inference precision is pinned to f32: on CPUs with bf16 or fp16 units OpenVINO would
otherwise lower FP32 models silently, which is drift the user did not ask for. An INT8 Q/DQ file still runs
its quantized layers in INT8 (that is what its Q/DQ pairs say).

``inference_precision="bf16"`` (what ``Deblurrer(precision="bf16")`` asks for) lowers an FP32 file to bfloat16
compute on CPUs with bfloat16 units (AVX512_BF16 or AMX: Intel Xeon 4th generation and later, AMD Zen 4 and
later). It is refused in one line on other CPUs, where OpenVINO would silently run f32 instead, and checked
after each compilation (OpenVINO reports the precision it compiled for). On an INT8 file it lowers the layers the
file keeps in float (its int8 ones stay int8): what ``Deblurrer(precision="int8")`` runs on such CPUs where the
file's held-out record measured it (:func:`runtime.selection.int8_compute`). OpenVINO compiles the ``ov`` flavour
that way but not the ``ort`` one (refused in one line at the first run).

In bfloat16 the backend applies exact graph rewrites OpenVINO runs faster before compiling
(:mod:`runtime.backends.openvino_rewrites`; ``rewrite=True``/``False`` forces them on or off).

Compiled shapes are kept on disk (OpenVINO's model cache, ``compile_cache``; default ``<cache>/openvino``,
:func:`banet.paths.cache_dir`) so that the next process reads them instead of compiling: ``python -m runtime``
run once per photo compiled the INT8 model for each photo's tile shape every time (1.5 s at 720x1280 here, 0.56 s
read back). OpenVINO keys its entries by the model, the options and its own version and compiles again when an
entry does not load; the folder is trimmed to :data:`COMPILE_CACHE_BYTES`, oldest entries first.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from banet.errors import ArtifactError, OptionError, first_line
from banet.metadata import outdated_graph, read_onnx_metadata
from runtime.backends.base import (
    Backend,
    BackendUnavailableError,
    LayerTime,
    ShapeCache,
    check_compile_cache,
    check_inference_precision,
    check_threads,
    check_tristate,
)
from runtime.backends.onnxruntime_backend import limits_from_metadata
from runtime.backends.openvino_rewrites import split_concat_convolutions

log = logging.getLogger(__name__)

#: Compiled shapes kept by default: a tiled photo uses up to 4 tile shapes (interior, right, bottom, corner).
DEFAULT_SHAPE_CACHE = 4
#: Compute precisions OpenVINO may run an FP32 file in: the file's own (f32) and bfloat16 where the CPU has the units.
#: Size the compile cache is trimmed to when a backend opens (oldest entries dropped first): ~60 INT8 shapes.
COMPILE_CACHE_BYTES = 512 * 2**20


def import_openvino():
    """The ``openvino`` module, or :class:`BackendUnavailableError` naming the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError("openvino is not installed: pip install 'banet-deploy[openvino]'") from exc
    return openvino


class OpenVinoBackend(Backend):
    """Runs an ONNX file exported by ``export/to_onnx.py`` (or a Q/DQ file made from it) on OpenVINO's CPU plugin.

    Args:
        path: the ``.onnx`` file; its metadata gives the conventions, as for ONNX Runtime.
        threads: inference threads (None/0: OpenVINO's default, all cores).
        static: compile per input shape (bounded cache) instead of one dynamic-shape model (which refuses a file
            an older exporter wrote: :func:`banet.metadata.outdated_graph`).
        shape_cache: how many compiled shapes to keep (``static`` only); the least recently used is dropped.
        device: OpenVINO device name.
        inference_precision: "f32" (default: the file's own arithmetic) or "bf16" (an FP32 file, or an INT8 file's
            float layers, in bfloat16 on a CPU with bfloat16 units; BackendUnavailableError elsewhere).
        compile_cache: folder for compiled shapes, read back by later processes ("auto": ``<cache>/openvino``;
            None: compile in every process). A folder that cannot be written is skipped with a log line.
        profile: turn on OpenVINO's performance counters, read by :meth:`layer_times` after each run (they cost a
            little time per layer; for ``python -m benchmarks.profile``, not for serving).
        rewrite: apply the exact rewrites of :mod:`runtime.backends.openvino_rewrites` before compiling (a
            channel Concat read by a Convolution becomes a sum of Convolutions). None (default): where they
            measured faster, in bfloat16 (4-7%); in f32 they measured no faster (within 4% either way), so f32
            compiles the file as written. True or False forces it.
    """

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, static: bool = True,
                 shape_cache: int = DEFAULT_SHAPE_CACHE, device: str = "CPU",
                 inference_precision: str = "f32", compile_cache: str | Path | None = "auto",
                 profile: bool = False, rewrite: bool | None = None) -> None:
        check_threads(threads)
        rewrite = check_tristate("rewrite", rewrite)
        check_inference_precision(inference_precision)
        threads = int(threads) if threads else None  # numpy integers too
        self._requests = ShapeCache(self._compile, shape_cache)
        ov = import_openvino()
        metadata = read_onnx_metadata(path)
        if not static and (outdated := outdated_graph(metadata, path)):
            raise ArtifactError(f"{outdated}; re-export it with export/to_onnx.py, or compile it per shape "
                                "(static=True, the default)")
        self._core = ov.Core()
        #: where compiled shapes are kept for later processes (None: not kept)
        self.compile_cache = use_compile_cache(self._core, compile_cache)
        # "cpu" (what PyTorch and apps write) names OpenVINO's "CPU"
        device = next((d for d in self._core.available_devices if d.lower() == str(device).lower()), device)
        if device not in self._core.available_devices:
            raise BackendUnavailableError(f"OpenVINO device {device!r} is not available here "
                                          f"(available: {self._core.available_devices})")
        self.device = device
        self.static = static
        if inference_precision != "f32":
            check_lowering(self._core, device, inference_precision, metadata.precision, Path(path).name)
        #: The arithmetic OpenVINO runs the file in: "f32" (its own) or "bf16"; checked after every compilation.
        self.inference_precision = inference_precision
        self._config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        #: whether performance counters are on (:meth:`layer_times`)
        self.profile = bool(profile)
        if self.profile:
            self._config["PERF_COUNT"] = True
        self._last = None  # the (compiled model, infer request) of the last run, for layer_times
        self._sources: dict[int, dict[str, tuple[str, ...]]] = {}  # per compiled model: layer -> file nodes
        self._model = self._core.read_model(str(path))
        rewrite = inference_precision == "bf16" if rewrite is None else rewrite
        #: how many exact rewrites were applied to the graph before compiling (0: compiled as the file has it)
        self.rewrites = split_concat_convolutions(self._model) if rewrite else 0
        self._input = self._model.inputs[0].get_any_name()
        self._name = Path(path).name
        self._dynamic = None if static else self._compile_model()
        super().__init__(metadata, limits_from_metadata(metadata))

    def _compile(self, shape: tuple[int, ...]):
        """An infer request for ``shape``: the model reshaped to it and compiled (or the dynamic model's)."""
        if self._dynamic is not None:
            return self._dynamic, self._dynamic.create_infer_request()
        self._model.reshape({self._input: list(shape)})
        log.debug("OpenVINO compiling %s for %s", self.metadata.precision, "x".join(map(str, shape)))
        compiled = self._compile_model()
        return compiled, compiled.create_infer_request()

    def _compile_model(self):
        """The model compiled (for its shape now), checked; a lowering OpenVINO cannot compile refused in one line."""
        try:
            compiled = self._core.compile_model(self._model, self.device, self._config)
        except RuntimeError as exc:
            if self.inference_precision == "f32":
                raise
            raise BackendUnavailableError(  # OpenVINO's multi-line C++ report, cut to the line that tells
                f"OpenVINO cannot compile {self.metadata.precision.upper()} {self._name} with "
                f"{self.inference_precision} compute ({openvino_reason(exc)}); run it with inference_precision='f32'"
                + (" or use its ov flavour (python -m calibration.quantize --flavour ov)"
                   if self.metadata.precision == "int8" else "")) from None
        return self._checked(compiled)

    def _checked(self, compiled):
        """``compiled``, after checking OpenVINO compiled it in the precision asked for (it may substitute one)."""
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != self.inference_precision:
            raise BackendUnavailableError(f"OpenVINO compiled the model for {got} arithmetic, not the "
                                          f"{self.inference_precision} asked for")
        return compiled

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes compiled and cached now, least recently used first (one entry, ``()``, if dynamic)."""
        return self._requests.shapes()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._last = self._requests.get(tuple(batch.shape) if self.static else ())
        _, request = self._last
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def layer_times(self) -> list[LayerTime]:
        """The layers the last :meth:`run` executed, in order, each with its time and the file's nodes OpenVINO
        compiled it from (its ``originalLayersNames``); empty before the first run. Needs ``profile=True``."""
        if not self.profile:
            raise OptionError("layer times need the performance counters: OpenVINOBackend(..., profile=True)")
        if self._last is None:
            return []
        compiled, request = self._last
        sources = self._sources.get(id(compiled))
        if sources is None:
            sources = {}
            for op in compiled.get_runtime_model().get_ordered_ops():
                info = op.get_rt_info()
                names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
                sources[op.get_friendly_name()] = tuple(n for n in names.split(",") if n)
            self._sources = {id(compiled): sources}  # one compiled shape at a time: profiles look at one shape
        executed = import_openvino().ProfilingInfo.Status.EXECUTED  # layers optimised out took no time
        return [LayerTime(p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3,
                          sources.get(p.node_name, ()))
                for p in request.get_profiling_info() if p.status == executed]

    def release_memory(self) -> None:
        """Free the intermediate buffers every compiled shape keeps (about 370 MB for a 720x1280 INT8 one); the
        next call on a shape allocates them again (measured ~5% slower at 720x1280)."""
        for compiled, _ in self._requests.entries():
            compiled.release_memory()

    def close(self) -> None:
        self._last = None
        self._sources = {}
        self._requests.clear()
        self._dynamic = None
        self._model = None

    def describe(self) -> str:
        mode = f"static shapes, cache {self._requests.size}" if self.static else "dynamic shapes"
        compute = "" if self.inference_precision == "f32" else f" in {self.inference_precision}"
        rewrites = f", {self.rewrites} concatenations split" if self.rewrites else ""
        return f"openvino {self.device} ({self.metadata.precision}{compute}, {mode}{rewrites})"


def check_lowering(core, device: str, precision: str, file_precision: str, name: str) -> None:
    """Refuse, in one line, a lowering to ``precision`` that ``device`` cannot run natively (OpenVINO would run
    f32 instead, silently) or that would stack on an FP16 file (an INT8 file's float layers may be lowered: its
    held-out record says what that costs)."""
    if file_precision not in ("fp32", "int8"):
        raise OptionError(f"{precision} compute lowers an FP32 model (or an INT8 one's float layers); {name} is an "
                          f"{file_precision.upper()} model")
    if not has_units(core, device, precision):
        from banet.machine import isa_cap

        cap, capabilities = isa_cap(), list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        where = (f"under the oneDNN instruction-set cap {cap} (ONEDNN_MAX_CPU_ISA)" if cap and precision.upper() in
                 capabilities else f"(OpenVINO capabilities: {', '.join(capabilities)})")
        raise BackendUnavailableError(
            f"this {device} has no {precision} units {where}; {precision} needs AVX512_BF16 or AMX (Intel Xeon 4th "
            "generation or later, AMD Zen 4 or later): run fp32 or int8")


def openvino_reason(exc: BaseException) -> str:
    """The line of an OpenVINO exception that says what failed (its report opens with source locations)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (told or lines or [first_line(exc)])[0][:300]


def has_units(core, device: str, precision: str) -> bool:
    """Whether OpenVINO's ``device`` computes ``precision`` ("bf16") natively (its optimisation capabilities). On
    the CPU, OpenVINO reports bfloat16 from the chip even under a oneDNN instruction-set cap that keeps its kernels
    from those units (:func:`banet.machine.isa_cap`); under such a cap it is not native."""
    from banet.machine import cap_allows, isa_cap

    if precision == "bf16" and device.upper().startswith("CPU") and not cap_allows("avx512_bf16", isa_cap()):
        return False
    return precision.upper() in list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def openvino_bf16_units(device: str = "CPU") -> bool:
    """Whether OpenVINO is installed here and its ``device`` has bfloat16 units (False where either is missing)."""
    try:
        ov = import_openvino()
        return has_units(ov.Core(), device, "bf16")
    except (BackendUnavailableError, RuntimeError):
        return False


def use_compile_cache(core, folder: str | Path | None) -> Path | None:
    """Point ``core``'s model cache at ``folder`` ("auto": ``<cache>/openvino``) after trimming it to
    :data:`COMPILE_CACHE_BYTES`; None (no cache) when not asked for or when the folder cannot be written."""
    folder = check_compile_cache(folder)
    if folder is None:
        return None
    if isinstance(folder, str) and folder == "auto":
        from banet.paths import cache_dir

        folder = cache_dir() / "openvino"
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable")
        trim_compile_cache(folder, COMPILE_CACHE_BYTES)
    except OSError as exc:
        log.info("OpenVINO compile cache off (%s): every process compiles its shapes", exc)
        return None
    core.set_property({"CACHE_DIR": str(folder)})
    return folder


#: The names OpenVINO gives its model-cache entries (``<hash>.blob``); nothing else in the folder is ever deleted.
_CACHE_ENTRY = re.compile(r"[0-9]+\.blob")


def trim_compile_cache(folder: Path, limit_bytes: int) -> None:
    """Delete the oldest of OpenVINO's cache entries in ``folder`` until they fit ``limit_bytes``. Only its own
    entries (:data:`_CACHE_ENTRY`): ``compile_cache=`` may name a folder that holds the user's files too, and
    trimming it deleted a 600 MB video there."""
    entries = []
    for path in folder.iterdir():
        if not _CACHE_ENTRY.fullmatch(path.name):
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        if path.is_file():
            entries.append((info.st_mtime_ns, info.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= limit_bytes:
            break
        try:
            path.unlink()
            total -= size
        except OSError:
            pass
