"""CUDA graphs for the PyTorch backend: one captured forward pass per input shape, replayed with one launch.

BANet's forward pass is hundreds to thousands of small kernels (the stack-10 network dispatched 2,881 operations
at 720x1280 and 1,081 since the strip-pooling matrices are kept per size; the default stack-4 439:
``benchmarks.cost.operations``); at batch 1 a GPU finishes them faster than the CPU issues them, so eager PyTorch
is launch-bound (H200: 20-40 ms eager FP32, flat in FP16, against a ~2 ms compute floor
at 1080x1920; ``deployment-facts.md``, 2026-12-04). A CUDA graph records those launches once per input shape
and replays them with one call.

:class:`GraphRunner` keeps one graph per key ``(N, C, H, W, dtype, memory format)`` in the runtime's bounded
LRU (:class:`runtime.backends.base.ShapeCache`: a tiled photo uses at most four tile shapes, same-sized batches
reuse one), with static device buffers the graph reads and writes and pinned host buffers, so a call is: one
host copy into pinned memory, one host-to-device copy, one replay, one device-to-host copy, one synchronisation.
It falls back to eager PyTorch, with the same function and so the same numbers, when graphs are off, on a CPU,
or when capturing a shape fails (logged once; that shape is not tried again). The capture step is a parameter
so the caching and fallback logic is tested without a GPU.

Memory: a runner's graphs share one CUDA graph memory pool (``torch.cuda.graph_pool_handle``), so the graphs kept
hold about the largest one's working memory plus each one's output, not each one's whole working memory (the
Deblurrer's memory budget bounds one forward pass; with a pool per graph, ``graph_cache`` of them would each keep
theirs). PyTorch's rule for sharing a pool (CUDA semantics, "Graph memory management"): the graphs must never
replay concurrently, and a graph's live tensors may be overwritten by another's replay. Here a runner replays one
graph at a time (its own lock, and each call synchronises before it returns), reads a graph's output right after
that graph's replay, and allocates each static input outside the capture (so never in the pool): another graph's
replay may overwrite only memory whose content the next replay of its owner recomputes first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from banet.pooling import held_matrices
from runtime.backends.base import ShapeCache

log = logging.getLogger(__name__)

#: Shapes kept captured by default: a tiled photo uses up to four tile shapes, a video one, batches a few more.
DEFAULT_GRAPH_CACHE = 8
#: Eager passes on a side stream before capture (cuDNN's benchmark mode picks its kernels in the first).
WARMUP_PASSES = 2

#: ``forward(x) -> y``: float32 NCHW device tensor in, float32 NCHW (contiguous) device tensor out.
Forward = Callable[[Tensor], Tensor]
#: ``capture(forward, static_in, pool) -> (replay, static_out, release)``: records ``forward`` reading ``static_in``
#: with its memory from ``pool`` (shared by a runner's graphs; None: a pool of its own); ``replay()`` recomputes
#: ``static_out`` from whatever ``static_in`` holds; ``release()`` frees the graph.
Capture = Callable[[Forward, Tensor, object], tuple[Callable[[], None], Tensor, Callable[[], None]]]
GraphKey = tuple[int, int, int, int, str, str]


def capture_cuda_graph(forward: Forward, static_in: Tensor, pool=None, warmup: int = WARMUP_PASSES
                       ) -> tuple[Callable[[], None], Tensor, Callable[[], None]]:
    """Capture ``forward(static_in)`` in a ``torch.cuda.CUDAGraph`` after ``warmup`` eager passes on a side
    stream (PyTorch's recipe: lazy initialisation and cuDNN autotuning must not happen during capture); ``pool``
    (a ``torch.cuda.graph_pool_handle()``) is the memory pool it shares with other graphs, None for its own."""
    device = static_in.device
    with torch.cuda.device(device):  # capture on the model's GPU, whichever is current
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                forward(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (another model in a server) does not invalidate this capture
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            static_out = forward(static_in)
    return graph.replay, static_out, graph.reset


@dataclass
class _Graph:
    """One captured shape: the graph, the device tensors it reads and writes, pinned host staging buffers."""

    replay: Callable[[], None]
    release: Callable[[], None]
    device_in: Tensor
    device_out: Tensor
    host_in: Tensor
    host_out: Tensor
    #: the strip-pooling matrices the graph reads by address (:func:`banet.pooling.held_matrices`): held while it
    #: is kept, as their own cache may drop them meanwhile
    held: list[Tensor]


def _release(entry: _Graph) -> None:
    entry.release()


_cudnn_lock = threading.Lock()
_cudnn_users = 0
_cudnn_before = False


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN's benchmark mode (time the candidate kernels once per shape, keep the fastest) while any block of this
    kind runs, so the backend does not change the setting for the rest of the process.

    The setting is process-wide: the first block to enter saves it and turns it on, the last to leave puts the
    saved value back (a count under a lock), so backends running in several threads never leave it on.
    """
    global _cudnn_users, _cudnn_before
    with _cudnn_lock:
        if _cudnn_users == 0:
            _cudnn_before = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
        _cudnn_users += 1
    try:
        yield
    finally:
        with _cudnn_lock:
            _cudnn_users -= 1
            if _cudnn_users == 0:
                torch.backends.cudnn.benchmark = _cudnn_before


class GraphRunner:
    """``batch (NCHW float32 numpy) -> forward(batch) (NCHW float32 numpy)`` through CUDA graphs per shape.

    Args:
        forward: float32 NCHW device tensor -> float32 NCHW contiguous device tensor (precision and memory
            format conversions go inside it, so they are captured too).
        device: where ``forward`` runs.
        dtype, memory_format: what ``forward`` computes in; part of the key (a graph is only valid for them).
        size: shapes kept captured (least recently used dropped, its graph and buffers freed); they share one
            memory pool (see the module's notes on memory).
        enabled: False runs eager only (the same ``forward``).
        capture: the capture step (default :func:`capture_cuda_graph`); tests inject a stand-in.
    """

    def __init__(self, forward: Forward, device: torch.device, dtype: torch.dtype = torch.float32,
                 memory_format: torch.memory_format = torch.contiguous_format, size: int = DEFAULT_GRAPH_CACHE,
                 enabled: bool = True, capture: Capture | None = None) -> None:
        self.forward = forward
        self.device = torch.device(device)
        self.dtype = dtype
        self.memory_format = memory_format
        self.enabled = enabled
        self._capture = capture or capture_cuda_graph
        self._graphs = ShapeCache(self._build, size, evict=_release)
        #: the memory pool this runner's graphs share: made for the first capture, dropped when no graph is kept
        #: (PyTorch frees a pool once every graph using it is released; a new capture then starts a new one)
        self._pool = None
        #: one call at a time: graphs sharing a pool must never replay concurrently
        self._lock = threading.Lock()
        #: keys whose capture failed: they run eager from then on (each is logged once)
        self.failed: set[GraphKey] = set()

    @property
    def size(self) -> int:
        return self._graphs.size

    def key(self, shape: tuple[int, ...]) -> GraphKey:
        """The cache key of an NCHW input shape: the shape, the compute dtype and memory format."""
        n, c, h, w = shape
        return n, c, h, w, str(self.dtype).removeprefix("torch."), str(self.memory_format).removeprefix("torch.")

    def keys(self) -> list[GraphKey]:
        """The keys captured now, least recently used first."""
        return self._graphs.shapes()

    def replay_function(self, shape: tuple[int, ...]) -> Callable[[], None] | None:
        """The captured graph's replay for ``shape`` (device work only, no copies), or None if it is not captured:
        what a benchmark times to compare with the compute floor."""
        key = self.key(tuple(shape))
        return self._graphs.get(key).replay if key in self.keys() else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            if not self.enabled:
                return self.eager(batch)
            key = self.key(batch.shape)
            if key in self.failed:
                return self.eager(batch)
            failure = None
            try:
                graph = self._get(key)
            except Exception as exc:  # capture is best effort: any failure means this shape runs eager
                failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if failure is None:
                return self._replay(graph, batch)
            # Out of the except block: the exception's traceback held the failed capture's frames (its graph, pool
            # and tensors), so empty_cache could not return that memory and the eager pass ran without it.
            self.failed.add(key)
            log.warning("CUDA graph capture failed for input %s, running it eagerly from now on: %s",
                        "x".join(map(str, key[:4])), failure)
            if not self.keys():
                self._pool = None  # a capture that failed part-way leaves nothing in a pool worth sharing
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return self.eager(batch)

    def _get(self, key: GraphKey) -> _Graph:
        """The graph for ``key``; when capturing it runs out of memory while other shapes hold theirs, those are
        freed and the capture tried once more (the newest shape is the one in use), once the failed capture's
        memory is released (outside the except block, whose traceback holds it)."""
        try:
            return self._graphs.get(key)
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError is its alias from torch 2.5 only
            if not self.keys():
                raise
        log.info("out of device memory capturing %s: freeing the %d graphs kept and trying again",
                 "x".join(map(str, key[:4])), len(self.keys()))
        self._clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._graphs.get(key)

    def eager(self, batch: np.ndarray) -> np.ndarray:
        """The same forward pass without a graph (CPU, graphs off, or a shape that could not be captured)."""
        with torch.inference_mode():
            y = self.forward(torch.from_numpy(batch).to(self.device))
            return y.cpu().numpy()  # the one synchronisation on a GPU

    def _build(self, key: GraphKey) -> _Graph:
        shape = key[:4]
        pinned = self.device.type == "cuda"
        device_in = torch.zeros(shape, dtype=torch.float32, device=self.device)  # outside the capture: not pooled
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else object()
        with held_matrices() as held:
            replay, device_out, release = self._capture(self.forward, device_in, self._pool)
        host_in = torch.empty(shape, dtype=torch.float32, pin_memory=pinned)
        host_out = torch.empty(tuple(device_out.shape), dtype=torch.float32, pin_memory=pinned)
        log.info("captured a CUDA graph for input %s (%s, %s); %d of %d kept", "x".join(map(str, shape)),
                 key[4], key[5], len(self._graphs.shapes()) + 1, self.size)
        return _Graph(replay, release, device_in, device_out, host_in, host_out, held)

    def _replay(self, graph: _Graph, batch: np.ndarray) -> np.ndarray:
        np.copyto(graph.host_in.numpy(), batch)
        graph.device_in.copy_(graph.host_in, non_blocking=True)
        graph.replay()
        graph.host_out.copy_(graph.device_out, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return graph.host_out.numpy().copy()  # the pinned buffer is overwritten by the next call

    def clear(self) -> None:
        """Free every graph and its buffers (the next call of each shape captures again, those whose capture failed
        too: a shortage of memory then is not kept as a reason to run them eager for the process's life)."""
        with self._lock:
            self._clear()
            self.failed.clear()

    def _clear(self) -> None:
        self._graphs.clear()
        self._pool = None
