"""How this project configures an ONNX Runtime session, in one place for every process that opens one: the
runtime's backend (``runtime.backends.onnxruntime_backend.open_session``) and the Triton Python model of the
``python`` flavour, which gets a copy of this file in its repository and cannot import the project.

Takes the ``onnxruntime`` module as an argument so that this core module imports nothing but the standard library.
"""

from __future__ import annotations


def session_options(ort, threads: int | None = None, profile_prefix: str | None = None, on_cpu: bool = True):
    """``ort.SessionOptions`` with quiet logging, ``threads`` intra-op threads (None/0: ONNX Runtime's default),
    and for CPU sessions (``on_cpu``) the CPU memory arena on with the memory pattern off.

    Why, measured (default network, 720x1280, 2 threads, AMD EPYC, ``benchmarks.memory_modes``): the arena reuses
    freed blocks instead of handing them back to the kernel and faulting fresh pages in on the next layer (about
    350,000 page faults per INT8 call without it, 42,000 with it): INT8 1.38x and FP32 1.19x faster. The memory
    pattern (one block per input shape, planned after its first run) is what made the arena's peak high (FP32
    1.82 GB against 1.31 GB with no arena); arena without it peaks lowest (1.06 GB). The arena keeps what it
    reached until the session is closed: one call's peak, which the Deblurrer's memory budget bounds. GPU
    sessions (``on_cpu=False``) keep ONNX Runtime's defaults (their providers have their own arenas).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if on_cpu:
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options
