"""How this project configures an ONNX Runtime session, in one place for every process that opens one: the
runtime's backend (``runtime.backends.onnxruntime_backend.open_session``) and the Triton Python model of the
``python`` flavour, which gets a copy of this file in its repository and cannot import the project.

Takes the ``onnxruntime`` module as an argument so that this core module imports nothing but the standard library.
"""

from __future__ import annotations

import threading

_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def share_cpu_arena(ort) -> None:
    """Register, once per process, the CPU memory arena this project's CPU sessions share (ONNX Runtime's
    ``create_and_register_allocator``; a session takes it with ``session.use_env_allocators``).

    One arena for all of them: per-shape sessions (``static=True``, up to four tile shapes) and several Deblurrers
    hold one peak between calls instead of one each (four INT8 tile-shape sessions: 0.95 GB against 2.37 GB with
    an arena per session and 4.13 GB with ONNX Runtime's defaults; ``benchmarks.ort_memory --per-shape``).
    Sessions the application opens itself are untouched unless they ask for it.
    """
    global _shared_arena_registered
    with _shared_arena_lock:
        if not _shared_arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
            _shared_arena_registered = True


def session_options(ort, threads: int | None = None, profile_prefix: str | None = None, on_cpu: bool = True):
    """``ort.SessionOptions`` with quiet logging, ``threads`` intra-op threads (None/0: ONNX Runtime's default),
    and for CPU sessions (``on_cpu``) the process's shared CPU memory arena (:func:`share_cpu_arena`) with the
    memory pattern off.

    Why, measured (default network, 2 threads, AMD EPYC, ``benchmarks/results/ort_memory_AMD-EPYC_2026-12-06.md``;
    ``python -m benchmarks.ort_memory`` re-measures it): an arena reuses freed blocks instead of handing them back
    to the kernel and faulting fresh pages in on the next layer (about 290,000 page faults per 720x1280 INT8 call
    without one, none with it): 1.2-1.4x faster. The memory pattern (a block per input shape, planned after its
    first call) is what made an arena's peak high (FP32 720x1280: 1.83 GB, 1.31 GB with no arena, 1.06 GB with the
    arena and no pattern). The arena keeps its peak between calls, as OpenVINO's compiled shapes do;
    ``release_memory()`` hands it back. GPU sessions (``on_cpu=False``) keep ONNX Runtime's defaults (their
    providers have their own arenas).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if on_cpu:
        share_cpu_arena(ort)
        options.add_session_config_entry("session.use_env_allocators", "1")
        options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options
