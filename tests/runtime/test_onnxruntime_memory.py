"""ONNX Runtime's CPU memory: sessions run with the arena on and the memory pattern off (faster, lower peak:
``python -m benchmarks.ort_memory``), and ``release_memory`` hands the arena's kept peak back without changing
results."""

import numpy as np
import pytest

from banet.onnxruntime_options import session_options
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, open_session

ort = pytest.importorskip("onnxruntime")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_cpu_sessions_use_the_arena_without_the_memory_pattern_and_gpu_sessions_keep_the_defaults():
    cpu = session_options(ort, threads=1)
    assert cpu.enable_cpu_mem_arena and not cpu.enable_mem_pattern
    defaults = ort.SessionOptions()
    gpu = session_options(ort, threads=1, on_cpu=False)
    assert (gpu.enable_cpu_mem_arena, gpu.enable_mem_pattern) == (defaults.enable_cpu_mem_arena,
                                                                  defaults.enable_mem_pattern)


def test_open_session_gives_cpu_sessions_the_cpu_options(one_bam_onnx):
    session = open_session(one_bam_onnx, ["CPUExecutionProvider"], threads=1)
    options = session.get_session_options()
    assert options.enable_cpu_mem_arena and not options.enable_mem_pattern


def test_release_memory_hands_back_the_arena_and_keeps_results(one_bam_onnx):
    big = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    small = np.random.default_rng(1).random((2, 3, 40, 56), dtype=np.float32)
    backend = OnnxRuntimeBackend(one_bam_onnx, threads=1)
    expected = backend.run(small)
    start = _rss_mb()
    backend.run(big)
    held = _rss_mb()
    assert held - start > 50  # the arena keeps the large call's working memory...
    backend.release_memory()
    assert _rss_mb() - start < (held - start) / 2  # ...until it is handed back
    np.testing.assert_array_equal(backend.run(small), expected)
    backend.close()


def test_release_memory_on_a_static_export_runs_its_one_shape(tmp_path):
    torch = pytest.importorskip("torch")
    from banet.config import BANetConfig
    from banet.model import BANet
    from export.onnx_export import ExportOptions, export_onnx

    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval()
    path, _ = export_onnx(model, tmp_path / "static.onnx", ExportOptions(static_hw=(32, 48)), "0" * 64, "tiny",
                          model.config)
    batch = np.random.default_rng(3).random((1, 3, 32, 48), dtype=np.float32)
    backend = OnnxRuntimeBackend(path, threads=1)
    expected = backend.run(batch)
    session, shapes = backend._dynamic[0], []
    run = session.run

    def recorded(outputs, feed, *rest):
        shapes.append(next(iter(feed.values())).shape)
        return run(outputs, feed, *rest)

    session.run = recorded
    backend.release_memory()  # no smaller input exists: its one shape, with the arena's shrinkage on
    assert shapes == [(1, 3, 32, 48)] and backend._dynamic[0] is session
    np.testing.assert_array_equal(backend.run(batch), expected)


def test_a_tiled_image_hands_the_engine_memory_back_before_it_is_assembled_and_a_whole_one_keeps_it(one_bam_onnx):
    from runtime import Deblurrer

    image = (np.random.default_rng(4).random((96, 80, 3)) * 255).astype(np.uint8)
    with Deblurrer(one_bam_onnx, backend="onnxruntime", threads=1, tile=32, tile_overlap=8) as tiled, \
            Deblurrer(one_bam_onnx, backend="onnxruntime", threads=1, memory_budget_mb=None) as whole:
        calls = []
        for deblurrer in (tiled, whole):
            release = deblurrer.backend.release_memory
            deblurrer.backend.release_memory = lambda release=release, d=deblurrer: calls.append(d) or release()
        first = tiled(image)
        assert calls == [tiled]
        np.testing.assert_array_equal(tiled(image), first)  # the arena grows again for the next image
        whole(image)
        assert calls == [tiled, tiled]


def test_per_shape_sessions_hand_back_through_the_shared_arena_and_stay_open(one_bam_onnx):
    big = np.random.default_rng(5).random((1, 3, 1024, 1024), dtype=np.float32)
    backend = OnnxRuntimeBackend(one_bam_onnx, threads=1, static=True)
    start = _rss_mb()
    expected = backend.run(big)
    held = _rss_mb()
    assert held - start > 50
    backend.release_memory()
    assert _rss_mb() - start < (held - start) / 2
    assert backend.session_shapes == [(1, 3, 1024, 1024)]
    np.testing.assert_array_equal(backend.run(big), expected)
