"""The little CUDA the TensorRT backend and the INT8 calibrator need, through cuda-python.

Device buffers, one stream, copies and the GPU's name and compute capability, via the CUDA runtime bindings of
cuda-python: ``cuda.bindings.runtime`` (cuda-python >= 12.6, cuda-bindings) or ``cuda.cudart`` (older releases).
Every call returns an error code first; :func:`check` turns a failure into an exception naming the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CudaUnavailableError(RuntimeError):
    """cuda-python is missing, or there is no usable CUDA GPU (no device, no driver, driver too old)."""


def import_cudart():
    """The CUDA runtime module of cuda-python, whichever import path this release has."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise CudaUnavailableError("cuda-python is not installed (pip install 'cuda-python>=12')") from exc
    return cudart


def _error_text(cudart, err) -> str:
    try:
        return cudart.cudaGetErrorString(err)[1].decode()
    except Exception:  # the error string itself failing must not hide the original error
        return str(err)


def check(cudart, result, call: str = "CUDA call"):
    """Unpack ``(err, *values)`` from a cuda-python call; raise on an error. Returns the value(s), if any."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{call} failed: {_error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``; CudaUnavailableError where there is none."""
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        raise CudaUnavailableError(f"no usable CUDA GPU: {_error_text(cudart, err)}")
    if count <= device:
        raise CudaUnavailableError(f"no CUDA GPU {device} (this machine has {count})")
    props = check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(device, name.rstrip("\0"), (int(props.major), int(props.minor)), int(props.totalGlobalMem))


class DeviceBuffer:
    """A device allocation that grows on demand (never shrinks until freed)."""

    def __init__(self, cudart) -> None:
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(check(self.cudart, self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            check(self.cudart, self.cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr, self.nbytes = 0, 0


class PinnedBuffer:
    """Page-locked host memory (``cudaMallocHost``) that grows on demand, seen as a float32 numpy array.

    Copies between pinned memory and the GPU are truly asynchronous and run at full bus speed; copies from
    ordinary (pageable) numpy memory go through a driver staging buffer first.
    """

    def __init__(self, cudart) -> None:
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 view of ``shape`` on the pinned memory (valid until the next larger request or ``free``)."""
        import ctypes

        count = int(np.prod(shape))
        if count * 4 > self.nbytes:
            self.free()
            self.ptr = int(check(self.cudart, self.cudart.cudaMallocHost(count * 4), f"cudaMallocHost({count * 4})"))
            self.nbytes = count * 4
        return np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.ptr)).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            check(self.cudart, self.cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr, self.nbytes = 0, 0


class CudaGraph:
    """A captured CUDA graph of work enqueued on a stream, replayed with one launch."""

    def __init__(self, cudart, stream: Stream, enqueue) -> None:
        self.cudart = cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(cudart, cudart.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            self.graph = check(cudart, cudart.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self.exec = check(cudart, cudart.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(self.cudart, self.cudart.cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        check(self.cudart, self.cudart.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
        check(self.cudart, self.cudart.cudaGraphDestroy(self.graph), "cudaGraphDestroy")


class Stream:
    """One CUDA stream with host<->device copies of contiguous numpy arrays."""

    def __init__(self, cudart) -> None:
        self.cudart = cudart
        self.handle = check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def to_device(self, dst: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        check(self.cudart, self.cudart.cudaMemcpyAsync(dst, array.ctypes.data, array.nbytes,
                                                       self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                                       self.handle), "cudaMemcpyAsync host->device")

    def to_host(self, array: np.ndarray, src: int) -> None:
        check(self.cudart, self.cudart.cudaMemcpyAsync(array.ctypes.data, src, array.nbytes,
                                                       self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                                       self.handle), "cudaMemcpyAsync device->host")

    def synchronize(self) -> None:
        check(self.cudart, self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            check(self.cudart, self.cudart.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None

    def __int__(self) -> int:
        return int(self.handle)
