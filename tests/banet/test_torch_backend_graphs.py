"""CUDA graphs in the PyTorch backend: keying, the LRU bound, fallbacks and option plumbing, tested on the CPU
with a stand-in capture step; real capture and replay where a CUDA GPU is present (marked ``gpu``)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch backend needs torch: pip install '.[export]'")

from banet.cuda_graphs import GraphRunner, cudnn_benchmark  # noqa: E402
from banet.errors import OptionError  # noqa: E402
from banet.torch_backend import TorchBackend  # noqa: E402
from runtime import Deblurrer  # noqa: E402
from runtime.backends.base import ShapeCache  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU visible to PyTorch")


class StandIn:
    """A capture step that records what it was asked for; ``replay`` reruns the forward pass into the static
    output (what a graph does), ``release`` is counted; ``fail`` makes the capture raise."""

    def __init__(self, fail: bool = False) -> None:
        self.captured: list[tuple[int, ...]] = []
        self.replays = 0
        self.released: list[tuple[int, ...]] = []
        self.pools: list[object] = []
        self.fail = fail

    def __call__(self, forward, static_in, pool):
        shape = tuple(static_in.shape)
        self.captured.append(shape)
        self.pools.append(pool)
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nsecond line")
        static_out = forward(static_in).clone()

        def replay():
            self.replays += 1
            static_out.copy_(forward(static_in))

        return replay, static_out, lambda: self.released.append(shape)


def _batch(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 3, h, w)).astype(np.float32)


def _runner(model, stand_in: StandIn, size: int = 8, enabled: bool = True) -> GraphRunner:
    return GraphRunner(lambda x: model(x).contiguous(), torch.device("cpu"), size=size, enabled=enabled,
                       capture=stand_in)


def test_same_shape_reuses_its_graph_and_new_shapes_capture(tiny_model):
    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in)
    a1, a2, b = _batch(1, 32, 48, 1), _batch(1, 32, 48, 2), _batch(2, 32, 48, 3)
    outs = [runner(x) for x in (a1, a2, b, a1)]
    assert stand_in.captured == [(1, 3, 32, 48), (2, 3, 32, 48)]  # batch size is part of the key
    assert stand_in.replays == 4
    assert runner.keys() == [(2, 3, 32, 48, "float32", "contiguous_format"), (1, 3, 32, 48, "float32",
                                                                                "contiguous_format")]
    with torch.inference_mode():
        for x, out in zip((a1, a2, b, a1), outs):  # each replay computed its own input, not a stale one
            np.testing.assert_array_equal(out, tiny_model(torch.from_numpy(x)).numpy())


def test_the_cache_bound_evicts_the_least_recently_used_and_frees_it(tiny_model):
    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in, size=2)
    a, b, c = _batch(1, 16, 16), _batch(1, 16, 32), _batch(1, 32, 16)
    for x in (a, b, a, c):  # a used again before c: b is the least recently used
        runner(x)
    assert [k[:4] for k in runner.keys()] == [(1, 3, 16, 16), (1, 3, 32, 16)]
    assert stand_in.released == [(1, 3, 16, 32)]
    runner(b)  # b captures again, a goes
    assert stand_in.captured.count((1, 3, 16, 32)) == 2
    assert stand_in.released == [(1, 3, 16, 32), (1, 3, 16, 16)]
    runner.clear()
    assert runner.keys() == [] and len(stand_in.released) == 4


def test_dtype_and_memory_format_are_part_of_the_key():
    fp32 = GraphRunner(lambda x: x, torch.device("cpu"))
    fp16_cl = GraphRunner(lambda x: x, torch.device("cpu"), torch.float16, torch.channels_last)
    assert fp32.key((1, 3, 8, 8)) == (1, 3, 8, 8, "float32", "contiguous_format")
    assert fp16_cl.key((1, 3, 8, 8)) == (1, 3, 8, 8, "float16", "channels_last")


def test_a_failed_capture_runs_eager_is_logged_once_and_not_retried(tiny_model, caplog):
    stand_in = StandIn(fail=True)
    runner = _runner(tiny_model, stand_in)
    x = _batch(1, 24, 24)
    with caplog.at_level(logging.WARNING, logger="banet.cuda_graphs"):
        first, second = runner(x), runner(x)
    assert stand_in.captured == [(1, 3, 24, 24)]  # tried once
    assert runner.failed == {(1, 3, 24, 24, "float32", "contiguous_format")} and runner.keys() == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "1x3x24x24" in warnings[0] and "second line" not in warnings[0]
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_out_of_memory_frees_the_other_graphs_and_tries_once_more(tiny_model):
    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in)
    runner(_batch(1, 16, 16))
    runner(_batch(1, 16, 32))
    real, calls = stand_in.__call__, []

    def out_of_memory_once(forward, static_in, pool):
        calls.append(tuple(static_in.shape))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(forward, static_in, pool)

    runner._capture = out_of_memory_once
    runner(_batch(1, 32, 32))
    assert calls == [(1, 3, 32, 32)] * 2 and [k[:4] for k in runner.keys()] == [(1, 3, 32, 32)]
    assert stand_in.released == [(1, 3, 16, 16), (1, 3, 16, 32)] and not runner.failed
    assert stand_in.pools[-1] is not stand_in.pools[0]  # the freed graphs' pool is not reused
    runner._capture = lambda f, x, p: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    runner.clear()
    runner(_batch(1, 8, 8))  # nothing else to free: this shape runs eager from now on
    assert [k[:4] for k in runner.failed] == [(1, 3, 8, 8)]


def test_a_kept_graph_holds_the_pooling_matrices_it_reads(tiny_model):
    """Round 17: a graph reads the strip-pooling matrices by address, but their cache (an LRU a replay never
    refreshes) dropped them once other sizes ran, and the memory was reused: wrong pixels from a graph still kept.
    The runner now holds what each graph read while it keeps it."""
    import gc
    import weakref

    from banet import pooling

    stand_in, refs = StandIn(), []

    def capture(forward, static_in, pool):
        real = pooling._kept

        def spy(*args):
            matrix = real(*args)
            refs.append(weakref.ref(matrix))
            return matrix

        pooling._kept = spy
        try:
            return stand_in(forward, static_in, pool)
        finally:
            pooling._kept = real

    runner = GraphRunner(lambda x: tiny_model(x).contiguous(), torch.device("cpu"), capture=capture)
    runner(_batch(1, 24, 40))
    assert refs  # the forward pass read kept matrices
    pooling._kept.cache_clear()  # what 20 other sizes do to them
    gc.collect()
    assert all(ref() is not None for ref in refs)  # before: every one freed
    runner.clear()
    gc.collect()
    assert all(ref() is None for ref in refs)  # released with the graph


def test_after_out_of_memory_the_failed_captures_memory_is_gone_before_retrying(tiny_model):
    """Round 17: the retry and the eager fallback ran inside the except block, whose traceback still held the failed
    capture's frames (its graph, pool and tensors): empty_cache could not return that memory."""
    import weakref

    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in)
    runner(_batch(1, 16, 16))  # another shape kept: an out-of-memory capture is retried once after freeing it
    scratch_refs, alive = [], []

    def out_of_memory(forward, static_in, pool):
        alive.append([ref() is not None for ref in scratch_refs])
        scratch = torch.empty(1 << 16)  # what a capture holds when it fails
        scratch_refs.append(weakref.ref(scratch))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    runner._capture = out_of_memory
    real_eager = runner.eager
    runner.eager = lambda batch: alive.append([ref() is not None for ref in scratch_refs]) or real_eager(batch)
    out = runner(_batch(1, 24, 24))
    assert out.shape == (1, 3, 24, 24)
    assert alive == [[], [False], [False, False]]  # at the retry, then at the eager pass: nothing left alive


def test_a_runners_graphs_share_one_memory_pool_until_all_are_freed(tiny_model):
    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in, size=2)
    for w in (16, 24, 32):  # the third capture evicts the first: the pool stays (the others still use it)
        runner(_batch(1, 16, w))
    assert len(stand_in.pools) == 3 and all(p is stand_in.pools[0] for p in stand_in.pools)
    other = _runner(tiny_model, StandIn())
    other(_batch(1, 16, 16))
    assert other._pool is not runner._pool  # pools are per runner (per backend)
    runner.clear()
    runner(_batch(1, 16, 16))
    assert stand_in.pools[-1] is not stand_in.pools[0]  # every graph was freed: a new pool


def test_disabled_runner_never_captures(tiny_model):
    stand_in = StandIn()
    runner = _runner(tiny_model, stand_in, enabled=False)
    runner(_batch(1, 16, 16))
    assert stand_in.captured == [] and runner.keys() == []


def test_shape_cache_hands_dropped_entries_to_evict():
    dropped = []
    cache = ShapeCache(lambda shape: f"entry {shape}", size=1, evict=dropped.append)
    cache.get((1,))
    cache.get((1,))
    assert dropped == []
    cache.get((2,))
    cache.clear()
    assert dropped == ["entry (1,)", "entry (2,)"]


def test_cpu_backend_is_eager_and_equals_the_model(tiny_weights, tiny_model):
    backend = TorchBackend(tiny_weights, device="cpu", fold_attention=False, channels_last=False)
    assert not backend.cuda_graph and "CUDA graphs" not in backend.describe()
    x = _batch(2, 40, 56)
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(backend.run(x), expected)


def test_backend_graph_path_equals_eager_on_cpu_with_a_stand_in_capture(tiny_weights):
    """The backend's own forward (precision/layout conversions included) through the graph path: the same
    numbers as its eager path, channels_last too."""
    for channels_last in (False, True):
        backend = TorchBackend(tiny_weights, device="cpu", channels_last=channels_last)
        stand_in = StandIn()
        graphs = GraphRunner(backend._forward, backend.device, memory_format=backend.runner.memory_format,
                             capture=stand_in)
        x = _batch(1, 48, 40)
        out = graphs(x)
        assert stand_in.replays == 1
        np.testing.assert_array_equal(out, backend.run(x))
        assert out.flags.c_contiguous and out.dtype == np.float32


def test_graph_options_on_a_cpu(tiny_weights):
    with pytest.raises(OptionError, match=r"cuda_graph=True needs a CUDA device, got device='cpu'"):
        Deblurrer(tiny_weights, backend="torch", device="cpu", cuda_graph=True)
    with Deblurrer(tiny_weights, backend="torch", device="cpu", cuda_graph=False) as deblur:
        assert not deblur.backend.cuda_graph
    with Deblurrer(tiny_weights, backend="torch", device="cpu", cuda_graph=None) as deblur:  # automatic: off
        assert not deblur.backend.cuda_graph
    for bad in ("yes", 1):  # the one message, from the Deblurrer's check and the backend's
        with pytest.raises(OptionError, match=r"cuda_graph must be True, False or None \(automatic\), got"):
            Deblurrer(tiny_weights, backend="torch", device="cpu", cuda_graph=bad)
        with pytest.raises(OptionError, match=r"cuda_graph must be True, False or None \(automatic\), got"):
            TorchBackend(tiny_weights, device="cpu", cuda_graph=bad)
    for bad in (0, True, 2.5):
        with pytest.raises(OptionError, match="graph_cache must be a whole number"):
            TorchBackend(tiny_weights, device="cpu", graph_cache=bad)


@pytest.fixture
def cudnn_benchmark_off():
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # so that turning it on (and back off) shows
    yield
    torch.backends.cudnn.benchmark = before


def test_cudnn_benchmark_is_scoped(cudnn_benchmark_off):
    with cudnn_benchmark():
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark is False


def test_cudnn_benchmark_from_two_threads_is_restored_by_the_last_to_leave(cudnn_benchmark_off):
    """Thread A enters, B enters, A leaves (B still runs: stays on), B leaves (back off); with a plain
    save-and-restore B would have saved True and left it on."""
    a_in, b_in, a_out, b_may_leave = (threading.Event() for _ in range(4))
    seen = {}

    def a():
        with cudnn_benchmark():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with cudnn_benchmark():
            b_in.set()
            a_out.wait(5)
            seen["after A left"] = torch.backends.cudnn.benchmark
            b_may_leave.wait(5)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    a_out.wait(5)
    b_may_leave.set()
    for t in threads:
        t.join(5)
    assert seen == {"after A left": True} and torch.backends.cudnn.benchmark is False


# -- real CUDA graphs ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_are_on_by_default_and_match_eager(tiny_weights):
    graphs = TorchBackend(tiny_weights, device="cuda")
    eager = TorchBackend(tiny_weights, device="cuda", cuda_graph=False)
    assert graphs.cuda_graph and not eager.cuda_graph and "CUDA graphs" in graphs.describe()
    for seed, shape in enumerate([(1, 64, 96), (1, 64, 96), (2, 32, 32)]):
        x = _batch(*shape, seed=seed)
        np.testing.assert_allclose(graphs.run(x), eager.run(x), rtol=0, atol=1e-4)
    assert len(graphs.runner.keys()) == 2 and not graphs.runner.failed


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_fp16_channels_last_within_the_fp16_budget(tiny_weights):
    """The fast path (graphs, FP16, channels_last, folded attention) against the network as trained in FP32."""
    reference = TorchBackend(tiny_weights, device="cuda", cuda_graph=False, fold_attention=False)
    fast = TorchBackend(tiny_weights, device="cuda", half=True, channels_last=True)
    x = _batch(1, 128, 160)
    ref, out = reference.run(x), fast.run(x)
    from export.parity import psnr

    drift = psnr(ref, out)  # outputs span about 1.0
    assert drift >= 50, drift


@pytest.mark.gpu
@needs_cuda
def test_evicted_graphs_give_their_memory_back(tiny_weights):
    backend = TorchBackend(tiny_weights, device="cuda", graph_cache=1)
    backend.run(_batch(1, 256, 256))
    torch.cuda.synchronize()
    held = torch.cuda.memory_reserved()
    for size in (192, 160, 128, 256):
        backend.run(_batch(1, size, size))
    backend.release_memory()
    assert backend.runner.keys() == [] and torch.cuda.memory_reserved() <= held


@pytest.mark.gpu
@needs_cuda
def test_graphs_sharing_a_pool_replay_in_any_order(tiny_weights):
    """Graphs in one pool may reuse each other's working memory: replayed out of capture order with new data
    each time, every output is still its own input's (each output is read before another graph replays)."""
    graphs = TorchBackend(tiny_weights, device="cuda")
    eager = TorchBackend(tiny_weights, device="cuda", cuda_graph=False)
    shapes = [(1, 64, 64), (1, 96, 64), (2, 64, 96)]
    for seed, shape in enumerate(shapes + shapes[::-1] + [shapes[1], shapes[0], shapes[2]]):
        x = _batch(*shape, seed=seed)
        np.testing.assert_allclose(graphs.run(x), eager.run(x), rtol=0, atol=1e-4)
    assert len(graphs.runner.keys()) == 3 and not graphs.runner.failed


@pytest.mark.gpu
@needs_cuda
def test_a_shared_pool_reserves_less_than_a_pool_per_graph(tiny_weights):
    from banet.cuda_graphs import capture_cuda_graph

    def reserved_after_capturing(capture) -> int:
        backend = TorchBackend(tiny_weights, device="cuda", graph_cache=4)
        if capture is not None:
            backend.runner._capture = capture
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_reserved()
        for size in (256, 224, 192, 160):
            backend.run(_batch(1, size, size))
        torch.cuda.synchronize()
        grown = torch.cuda.memory_reserved() - before
        backend.close()
        torch.cuda.empty_cache()
        return grown

    shared = reserved_after_capturing(None)
    separate = reserved_after_capturing(lambda forward, x, pool: capture_cuda_graph(forward, x, None))
    assert shared < separate, (shared, separate)


def test_a_tiled_photo_on_a_gpu_keeps_its_tile_graphs(tiny_weights):
    """Round 17: after every tiled image the Deblurrer released the backend's memory, which on a GPU is its CUDA
    graphs: each photo of the same size captured its tile shapes again (two eager warm-up passes each) and none
    was kept. Only a host backend hands its tiles' memory back now."""
    stand_in = StandIn()
    with Deblurrer(tiny_weights, backend="torch", device="cpu", tile=64, tile_overlap=8) as deblurrer:
        backend = deblurrer.backend
        backend.runner = GraphRunner(backend._forward, backend.device, capture=stand_in)
        backend.device_memory_bytes = lambda: 80 << 30  # as on a GPU
        photo = (np.random.default_rng(0).random((100, 120, 3)) * 255).astype(np.uint8)
        for _ in range(3):
            deblurrer(photo)
        assert len(stand_in.captured) == len(set(stand_in.captured)) >= 1  # each tile shape captured once
        assert backend.runner.keys()  # and kept
