"""The backend interface: load an artifact, run an NCHW float32 batch, close.

Pre-processing, padding, tiling and post-processing sit above this (``runtime.deblurrer``) and are shared by
every backend; a backend only moves tensors through one inference engine.
"""

from __future__ import annotations

import abc
import numbers
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banet.errors import OptionError
from banet.machine import usable_cpus
from banet.metadata import ModelMetadata


class BackendUnavailableError(RuntimeError):
    """The backend's library (or a GPU) is missing; the message names the extra to install."""


class IncompatibleArtifactError(RuntimeError):
    """An artifact that cannot run here (e.g. an engine built for another GPU or TensorRT version)."""


@dataclass(frozen=True)
class ShapeLimits:
    """Input shapes a loaded artifact accepts.

    ``min_hw``/``max_hw`` bound height and width (inclusive); ``max_batch`` bounds the batch;
    ``static_shape`` (N, H, W) is set when the artifact takes exactly one shape; ``fixed_batch`` when only
    the batch is fixed.
    """

    min_hw: tuple[int, int] = (2, 2)
    max_hw: tuple[int, int] = (1 << 30, 1 << 30)
    max_batch: int = 1 << 30
    static_shape: tuple[int, int, int] | None = None
    fixed_batch: int | None = None

    def check(self, shape: tuple[int, ...]) -> str | None:
        """Why ``shape`` (N, C, H, W) cannot run, or None if it can."""
        n, _, h, w = shape
        if self.static_shape is not None and (n, h, w) != tuple(self.static_shape):
            return f"this artifact only takes batch x height x width = {'x'.join(map(str, self.static_shape))}"
        if self.fixed_batch is not None and n != self.fixed_batch:
            return f"this artifact only takes batches of exactly {self.fixed_batch}"
        if n > self.max_batch:
            return f"batch {n} exceeds the artifact's maximum {self.max_batch}"
        if h < self.min_hw[0] or w < self.min_hw[1]:
            return f"{h}x{w} is smaller than the artifact's minimum {self.min_hw[0]}x{self.min_hw[1]}"
        if h > self.max_hw[0] or w > self.max_hw[1]:
            return f"{h}x{w} exceeds the artifact's maximum {self.max_hw[0]}x{self.max_hw[1]}"
        return None


def check_threads(threads) -> None:
    """Refuse a thread count that is not a whole number >= 0 (None/0: the library's default, all cores), or that
    is above the CPUs this process may use (:func:`banet.machine.usable_cpus`, as the command lines'
    ``--threads``), in one :class:`~banet.errors.OptionError` line; the one rule for ``threads`` wherever it is
    given. More threads than CPUs only contend: 4096 on 2 cores took 15 s a call on PyTorch (and left 8192 threads
    after close), and ONNX Runtime 2 minutes to open its session."""
    if threads is None:
        return
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool | np.bool_) or threads < 0:
        raise OptionError(f"threads must be a whole number >= 0 (0: all cores), got {threads!r}")
    cpus = usable_cpus()
    if threads > cpus:
        raise OptionError(f"threads must be at most the {cpus} CPU(s) this process may use (0: all of them), got "
                          f"{threads!r}")


def check_compile_cache(folder) -> str | Path | None:
    """``folder`` as a compile-cache option: None (off), "auto", or a non-empty path; else one
    :class:`~banet.errors.OptionError` line (``""`` would be the working folder, trimmed as a cache)."""
    if folder is None or (isinstance(folder, str) and folder == "auto"):
        return folder
    if not isinstance(folder, str | os.PathLike) or not str(os.fspath(folder)).strip():
        raise OptionError(f"compile_cache must be None, \"auto\" or a folder's path, got {folder!r}")
    if Path(folder).exists() and not Path(folder).is_dir():  # the cache was then off, said at INFO only
        raise OptionError(f"compile_cache {os.fspath(folder)} is a file, not a folder; give a folder's path (or None)")
    return Path(folder)


def check_bool(name: str, value) -> bool:
    """``value`` as True or False, else one :class:`~banet.errors.OptionError` line naming ``name`` (the Deblurrer's
    options and the PyTorch backend's ``fold_attention`` check with it)."""
    if not isinstance(value, bool | np.bool_):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_tristate(name: str, value) -> bool | None:
    """``value`` as True, False or None (automatic: the backend decides), else one
    :class:`~banet.errors.OptionError` line naming ``name``; the one rule for ``cuda_graph`` and ``io_binding``
    (the Deblurrer, the PyTorch and the ONNX Runtime backends all check with it)."""
    if value is None:
        return None
    if not isinstance(value, bool | np.bool_):
        raise OptionError(f"{name} must be True, False or None (automatic), got {value!r}")
    return bool(value)


#: What ``inference_precision`` takes on the CPU backends that can lower an FP32 model (OpenVINO, PyTorch): the
#: model's own float32, or bfloat16 (``Deblurrer(precision="bf16")``).
INFERENCE_PRECISIONS = ("f32", "bf16")


def check_inference_precision(value) -> str:
    """``value`` if it is one of :data:`INFERENCE_PRECISIONS`, else one :class:`~banet.errors.OptionError` line; the
    one rule for the option on every backend that takes it."""
    if value not in INFERENCE_PRECISIONS:
        raise OptionError(f"inference_precision must be one of {INFERENCE_PRECISIONS}, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerTime:
    """One layer an inference engine ran, from its own profile: the layer's name, what it computes, the kernel
    that ran it, its time, and the file's nodes it was made from (an engine fuses several nodes into one layer and
    inserts layers of its own, such as layout reorders, which come from no node)."""

    name: str
    op_type: str
    kernel: str
    ms: float
    sources: tuple[str, ...] = ()


class ShapeCache:
    """A bounded least-recently-used map from an input shape to what was compiled for it.

    Backends that compile per input shape (static shapes are where OpenVINO and ONNX Runtime make their fastest
    code) keep a few: a tiled photo uses at most four tile shapes and same-sized batches reuse one. Dropping the
    least recently used entry bounds memory when a caller feeds many sizes.
    """

    def __init__(self, build: Callable[[tuple[int, ...]], object], size: int,
                 evict: Callable[[object], None] | None = None) -> None:
        if isinstance(size, bool | np.bool_) or not isinstance(size, numbers.Integral) or size < 1:
            raise OptionError(f"shape_cache must be a whole number >= 1, got {size!r}")
        size = int(size)
        self._build = build
        self.size = size
        #: called with each entry dropped (least recently used, or by clear): frees what the entry holds (a CUDA
        #: graph's memory pool) now instead of whenever the garbage collector gets to it
        self._evict = evict
        self._entries: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, shape: tuple[int, ...]) -> object:
        """The entry for ``shape``: cached (now most recently used) or built, cached and the oldest dropped."""
        if shape in self._entries:
            self._entries.move_to_end(shape)
            return self._entries[shape]
        entry = self._build(shape)
        self._entries[shape] = entry
        while len(self._entries) > self.size:
            _, dropped = self._entries.popitem(last=False)
            if self._evict is not None:
                self._evict(dropped)
        return entry

    def shapes(self) -> list[tuple[int, ...]]:
        """The shapes cached now, least recently used first."""
        return list(self._entries)

    def entries(self) -> list[object]:
        """What is cached now, in the same order (the recency order is left as it is)."""
        return list(self._entries.values())

    def clear(self) -> None:
        """Drop every entry (each handed to ``evict`` first, oldest first)."""
        while self._entries:
            _, dropped = self._entries.popitem(last=False)
            if self._evict is not None:
                self._evict(dropped)


class Backend(abc.ABC):
    """One loaded model on one inference engine. Thread safety is the caller's (the Deblurrer locks)."""

    #: short name: "torch", "onnxruntime", "tensorrt", "tensorrt-rtx"
    name: str = "backend"

    def __init__(self, metadata: ModelMetadata, limits: ShapeLimits) -> None:
        self.metadata = metadata
        self.limits = limits

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 network input (already normalised and padded) -> NCHW float32 raw network output."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release engine and device memory. Safe to call twice."""

    def release_memory(self) -> None:  # noqa: B027 (optional: most engines keep nothing between calls)
        """Hand back working memory the engine keeps between calls (a server does after large requests); the next
        call allocates it again. Default: nothing is kept."""

    def device_memory_bytes(self) -> int | None:
        """Total memory of the GPU this backend runs on, for the Deblurrer's automatic memory budget; None on the
        host (the default), where the budget stays the host's."""
        return None

    def describe(self) -> str:
        """One line for logs: backend, device and precision."""
        return f"{self.name} ({self.metadata.precision})"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
