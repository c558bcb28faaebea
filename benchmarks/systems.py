"""The systems a benchmark compares: each turns an NCHW float32 batch into the network output.

A system is built from the runtime's own backends where one exists (so the benchmark times what apps run),
plus the PyTorch variants only a GPU makes worthwhile (half precision, channels_last, torch.compile, CUDA
graphs). Every system either builds or says why it cannot run here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class System:
    name: str
    precision: str
    run: Callable[[np.ndarray], object]
    close: Callable[[], None]
    device: str
    cuda: bool = False
    #: bytes of device memory in use at peak, if the system can tell
    device_peak: Callable[[], int | None] = lambda: None


class Unavailable(Exception):
    """This system cannot run on this machine; the message says why (printed as the skip reason)."""


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


#: PyTorch variants that also run on a CPU (torch.compile's inductor makes C++ kernels there).
CPU_VARIANTS = ("eager", "compile")


def torch_system(weights: Path, variant: str) -> System:
    """PyTorch eager FP32 (the baseline), torch.compile (inductor, CPU or GPU), or a GPU-only variant: fp16,
    channels_last, cudagraphs."""
    import torch

    from banet.torch_backend import TorchBackend

    cuda = _cuda_available()
    if variant not in CPU_VARIANTS and not cuda:
        raise Unavailable(f"torch {variant} is a GPU optimisation; no CUDA GPU here")
    device = "cuda" if cuda else "cpu"
    # the checkpoint as trained (contiguous layout, attention unfolded): the baseline every speed-up divides
    backend = TorchBackend(weights, device=device, half=variant in ("fp16", "cudagraphs"),
                           channels_last=variant == "channels_last", cuda_graph=False,  # variants made here
                           fold_attention=False)
    model = backend.model
    precision = "fp16" if variant in ("fp16", "cudagraphs") else "fp32"
    dtype = torch.float16 if precision == "fp16" else torch.float32
    graphs: dict[tuple, tuple] = {}  # cudagraphs: shape -> (static input, replay, static output, release)

    if variant == "compile":
        # Inductor's default mode on both: "max-autotune-no-cudagraphs" autotuned for over 190 s on an H200
        # (deployment-facts.md, 2026-12-04) without reaching the rows after it.
        compiled = torch.compile(model)

        def run(batch: np.ndarray):
            with torch.inference_mode():
                return compiled(torch.from_numpy(batch).to(device, dtype))
    elif variant == "cudagraphs":
        # The project's capture (banet.cuda_graphs: warm-up on a side stream, thread-local capture), one graph per
        # shape, without the runtime's pinned host copies: the output stays on the device. Each graph has a pool of
        # its own (pool None): a caller may keep one shape's output while another shape replays.
        from banet.cuda_graphs import capture_cuda_graph

        def half_forward(x):
            return model(x.half())

        def run(batch: np.ndarray):
            key = batch.shape
            with torch.inference_mode():
                if key not in graphs:
                    static_in = torch.from_numpy(batch).to(device)
                    graphs[key] = (static_in, *capture_cuda_graph(half_forward, static_in, None))
                static_in, replay, static_out, _ = graphs[key]
                static_in.copy_(torch.from_numpy(batch))
                replay()
                return static_out
    else:
        def run(batch: np.ndarray):
            x = torch.from_numpy(batch).to(device, dtype)
            if variant == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return model(x)

    def peak() -> int | None:
        return int(torch.cuda.max_memory_allocated()) if cuda else None

    def close() -> None:
        for *_, release in graphs.values():
            release()
        graphs.clear()
        backend.close()

    return System(f"torch {variant}", precision, run, close, device, cuda, peak)


def deblurrer_torch_system(weights: Path, half: bool = False, device: str = "cuda", bf16: bool = False) -> System:
    """The runtime's own PyTorch path, as ``Deblurrer(weights, backend="torch", device=...)`` runs it: the attention
    folded; on CUDA, CUDA graphs per shape (on by default there), pinned host buffers, one synchronisation per call;
    on a CPU, channels_last (the backend's defaults there), and with ``bf16`` under bfloat16 autocast
    (``precision="bf16"``, CPUs with bfloat16 units)."""
    cuda = device.startswith("cuda")
    if cuda and not _cuda_available():
        raise Unavailable("the runtime's CUDA-graph path needs a CUDA GPU; none here")
    import torch

    from runtime import Deblurrer
    from runtime.backends.base import BackendUnavailableError

    try:
        deblur = Deblurrer(weights, backend="torch", device=device, half=half, memory_budget_mb=None,
                           precision="bf16" if bf16 else None)
    except BackendUnavailableError as exc:  # bfloat16 asked of a CPU without its units
        raise Unavailable(str(exc)) from None
    backend = deblur.backend
    tags = (["graphs"] if backend.cuda_graph else []) + (["fp16"] if half else []) + (["bf16"] if bf16 else []) \
        + (["channels_last"] if backend.channels_last else []) + [backend.metadata.attention]
    return System(f"Deblurrer torch {'cuda' if cuda else 'cpu'} ({', '.join(tags)})",
                  "bf16" if bf16 else backend.metadata.precision, backend.run, deblur.close, device, cuda,
                  (lambda: int(torch.cuda.max_memory_allocated())) if cuda else (lambda: None))


def onnxruntime_system(onnx_path: Path, name: str, threads: int | None = None, static: bool = False) -> System:
    """The runtime's ONNX Runtime backend: one dynamic-shape session, or one session per shape (``static``)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, threads=threads, static=static)
    provider = backend.providers[0]
    device = "cuda" if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
    return System(name, backend.metadata.precision, backend.run, backend.close, device, device == "cuda")


def openvino_system(onnx_path: Path, name: str, threads: int | None = None, static: bool = True,
                    inference_precision: str = "f32", rewrite: bool | None = None) -> System:
    """The runtime's OpenVINO backend on the CPU: compiled per shape (``static``) or one dynamic-shape model; an FP32
    file in bfloat16 with ``inference_precision="bf16"`` (``Deblurrer(precision="bf16")``; an INT8 file's float
    layers: ``Deblurrer(precision="int8")`` on such CPUs; Unavailable on CPUs without bfloat16 units);
    ``rewrite``: the backend's graph rewrites forced on or off (None: its default; the peers that measure them)."""
    try:
        from runtime.backends.openvino_backend import OpenVinoBackend, import_openvino

        import_openvino()
    except Exception as exc:  # not installed: the one-line reason is the skip reason
        raise Unavailable(str(exc).splitlines()[0]) from exc
    from runtime.backends.base import BackendUnavailableError

    try:
        backend = OpenVinoBackend(onnx_path, threads=threads, static=static, inference_precision=inference_precision,
                                  rewrite=rewrite)
    except BackendUnavailableError as exc:  # e.g. no bfloat16 units on this CPU
        raise Unavailable(str(exc)) from exc
    # an FP32 file lowered is a bf16 system; an INT8 file stays int8 (only its float layers are lowered)
    lowered = inference_precision != "f32" and backend.metadata.precision == "fp32"
    return System(name, inference_precision if lowered else backend.metadata.precision, backend.run, backend.close,
                  "cpu")


def tensorrt_system(engine: Path, name: str) -> System:
    try:
        from runtime.backends.tensorrt import TensorRTBackend
    except ImportError as exc:
        raise Unavailable(f"TensorRT backend unavailable: {exc}") from exc
    try:
        backend = TensorRTBackend(engine)
    except Exception as exc:  # missing TensorRT / GPU / incompatible engine: reported as the skip reason
        raise Unavailable(str(exc).splitlines()[0]) from exc
    return System(name, backend.metadata.precision, backend.run, backend.close, "cuda", True)
