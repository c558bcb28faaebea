"""``Deblurrer``: the one object apps embed. Images in, deblurred images out, on any backend.

    from runtime import Deblurrer
    with Deblurrer() as deblur:            # the embedded default model (its ONNX on OpenVINO / ONNX Runtime)
        sharp = deblur(cv2.imread("blurred.png"))

Conventions (channel order, normalisation, size multiple) come from the artifact's metadata and are applied
by :mod:`banet.processing`; padding, tiling and batching are here; the backend only runs tensors.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from banet.config import activation_bytes_per_pixel
from banet.errors import DeblurrerClosedError, OptionError
from banet.processing import ImageFormatError, check_unit_range, padded_size, postprocess, preprocess
from banet.shapes import hw_text
from runtime.backends.base import Backend, check_bool, check_threads, check_tristate
from runtime.host_memory import avoid_hugepage_stalls
from runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, merge_image, split_image
from runtime.loading import BACKENDS, backend_for_path, open_backend
from runtime.selection import choose, precision_options
from runtime.tiling import run_tiled, tile_plan

log = logging.getLogger(__name__)

#: Working memory one forward pass may use by default, in MiB: with the image itself and the runtime, a 12 MP
#: photo stays well inside an 8 GB laptop's memory (see the README for measured peaks).
DEFAULT_MEMORY_BUDGET_MB = 768
#: Share of a GPU's memory one forward pass may use under the automatic budget: an RTX 2080 Ti's 11 GiB gives
#: 3.7 GiB, so a 1080x1920 frame runs untiled in FP32 (2.8 GB estimated), leaving the rest for the model, CUDA
#: graphs' memory pool and other processes.
GPU_MEMORY_SHARE = 1 / 3
#: Largest budget taken literally, in MiB (1 EiB, more than any machine has): a larger one means no limit in effect.
_MAX_BUDGET_MB = float(2**40)


def automatic_budget_mb(device_memory_bytes: int | None) -> float:
    """The ``memory_budget_mb="auto"`` budget: :data:`DEFAULT_MEMORY_BUDGET_MB` on the host, and
    :data:`GPU_MEMORY_SHARE` of the GPU's memory (never less) when the backend runs on a GPU."""
    if device_memory_bytes is None:
        return float(DEFAULT_MEMORY_BUDGET_MB)
    return max(float(DEFAULT_MEMORY_BUDGET_MB), GPU_MEMORY_SHARE * device_memory_bytes / 2**20)


#: Overlap between tiles, in pixels, unless told otherwise (blended linearly).
DEFAULT_TILE_OVERLAP = 32


class Deblurrer:
    """Deblur images with a BANet checkpoint, ONNX model or TensorRT engine.

    Args:
        model: path of a checkpoint (.pth/.safetensors), ONNX file or engine; None for the embedded default.
        backend: "torch", "onnxruntime", "openvino" or "tensorrt"; "auto": the fastest installed for the file
            (OpenVINO, else ONNX Runtime, for an .onnx and the default model); default chosen from the file
            extension.
        precision: "int8" runs the model's INT8 Q/DQ file on ONNX Runtime or OpenVINO (found next to the .onnx;
            shipped for the default model), refused unless its recorded held-out cost is within 0.3 dB; "bf16" runs
            an FP32 .onnx on OpenVINO in bfloat16, or a checkpoint on PyTorch under bfloat16 autocast (CPUs with
            bfloat16 units only); "fp32" insists on an FP32 file; None (default) runs the file as it is.
        rgb: numpy inputs are RGB instead of OpenCV's BGR (outputs keep the input's order either way).
        tile: run images larger than ``tile`` x ``tile`` pixels in overlapping tiles (None: when the memory
            budget or the artifact's shape limits require it).
        tile_overlap: overlap between tiles in pixels, blended linearly.
        memory_budget_mb: working memory one forward pass may take (estimated from the network's widths);
            larger images run in tiles of the largest size that fits, same-sized batches in chunks that fit.
            "auto" (default): 768 MiB on the host, a third of the GPU's memory when the backend runs on one
            (:func:`automatic_budget_mb`; the resolved number is ``self.memory_budget_mb``). None: no budget
            (an untiled 12 MP photo then needs about 13 GB on ONNX Runtime).
        max_pixels: largest image (height x width) taken, refused with :class:`ImageFormatError` before any copy
            of it is made: the whole image is held in float32 (12 bytes a pixel a copy) whatever the tiling.
            Default 200 MP (:data:`runtime.images.DEFAULT_MAX_PIXELS`, the limit of ``read_image``); None: no limit.
        **backend_options: passed to the backend (e.g. ``device="cuda"``, ``half=True``, ``threads=2``).
    """

    def __init__(self, model: str | Path | None = None, backend: str | None = None, rgb: bool = False,
                 tile: int | None = None, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                 memory_budget_mb: float | str | None = "auto", precision: str | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, **backend_options) -> None:
        check_options(model, backend, rgb, tile, tile_overlap, memory_budget_mb, backend_options, max_pixels)
        avoid_hugepage_stalls()  # large photos: seconds of kernel compaction otherwise (runtime.host_memory)
        # The default model: its shipped ONNX on the fastest CPU engine installed (runtime.selection).
        model, backend = choose(None if model is None else Path(model), backend, precision, backend_options)
        #: The file this Deblurrer runs (the INT8 file chosen for precision="int8", the default model's file...).
        self.model_path = model
        self.rgb = rgb
        self.tile = tile
        self.tile_overlap = tile_overlap
        #: largest image taken, in pixels (None: no limit)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self._lock = threading.Lock()
        self.backend: Backend | None = _open(model, backend, {
            **backend_options, **precision_options(precision, model, backend, backend_options)})
        try:
            #: MiB one forward pass may take (None: unbounded); "auto" resolved for the backend's device
            self.memory_budget_mb: float | None = (automatic_budget_mb(self.backend.device_memory_bytes())
                                                   if memory_budget_mb == "auto" else memory_budget_mb)
            self.conventions = self.backend.metadata.conventions
            multiple = self.conventions.size_multiple  # known from the model's metadata, so checked once it is open
            if tile is not None and (tile < 2 * tile_overlap or tile % multiple):
                raise OptionError(f"tile must be a multiple of {multiple} and at least twice tile_overlap "
                                  f"({tile_overlap}), got {tile}")
            smallest = max(self.backend.limits.min_hw)
            if tile is not None and tile < smallest:  # else every image fails after it is read, one by one
                raise OptionError(f"tile {tile} is below the {smallest} pixels {self.backend.describe()} takes at "
                                  "the least")
            self._bytes_per_pixel = activation_bytes_per_pixel(self.backend.metadata.config)
            budget = self._budget_pixels()
            side = 2 * tile_overlap + multiple  # the smallest tile that overlap leaves room in
            floor = (2 * DEFAULT_TILE_OVERLAP + multiple) ** 2  # a budget under the default's smallest tile gets it
            if tile is None and budget is not None and side * side > max(budget, floor) \
                    and self.backend.limits.static_shape is None:  # tiles that large were planned anyway: the budget
                # was off without a word (4002x4002 tiles for tile_overlap=2000, a 12 MP photo run whole: ~16 GB)
                largest = max(DEFAULT_TILE_OVERLAP, (math.isqrt(budget) - multiple) // 2)
                raise OptionError(f"tile_overlap={tile_overlap} needs tiles of at least {side}x{side} pixels, more "
                                  f"than the memory budget lets one pass take ({budget / 1e6:.2f} MP, "
                                  f"memory_budget_mb={self.memory_budget_mb:g}); give a tile_overlap of at most "
                                  f"{largest}, or a larger memory_budget_mb (None: no budget)")
        except BaseException:  # refused after the backend opened: it is closed, never left holding its memory
            self.close()
            raise
        log.info("Deblurrer ready: %s", self.backend.describe())

    # -- public API ---------------------------------------------------------------------------------------------
    def deblur(self, image, rgb: bool | None = None):
        """Deblur one image: HxWx3 (BGR by default) / HxW / HxWx4 numpy array or a PIL image.

        Returns the same size, dtype, channel order (and alpha, untouched) as the input.
        """
        return self._deblur_list([image], rgb, single=True)[0]

    __call__ = deblur

    def deblur_batch(self, images: Sequence, rgb: bool | None = None) -> list:
        """Deblur a list of images (sizes may differ); images of equal size run as one batch.

        An image that cannot be deblurred is refused before any runs, its error naming its index in the list.
        """
        if _is_single_image(images):
            raise ImageFormatError(f"deblur_batch takes a list of images, got one {type(images).__name__}; call "
                                   "deblur() for a single image")
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence | Iterable):
            raise ImageFormatError(f"deblur_batch takes a list of images, got {type(images).__name__}")
        return self._deblur_list(images, rgb, single=False)

    def _deblur_list(self, images: Iterable, rgb: bool | None, single: bool) -> list:
        """Images -> restored images in the same forms; ``single``: one image from :meth:`deblur`, whose errors
        need no index."""
        rgb = self.rgb if rgb is None else check_bool("rgb", rgb)
        parts = []
        for index, image in enumerate(images):
            try:
                parts.append(split_image(image, rgb, self.max_pixels))
                if not single and parts[-1][0].dtype.kind == "f":  # its range too, before any image of the list runs
                    check_unit_range(parts[-1][0])
            except (ImageFormatError, ImageReadError) as exc:
                if single:
                    raise
                raise type(exc)(f"image {index} of the list: {exc}") from None
        results: list = [None] * len(parts)
        groups: dict[tuple, list[int]] = {}
        for i, (colour, _, form) in enumerate(parts):
            groups.setdefault((colour.shape, str(colour.dtype), form.channel_order), []).append(i)
        for (shape, _, _), indices in groups.items():  # before any image of the list runs (else a bare
            problem = self._tiling_problem(*shape[:2])  # ValueError from runtime/tiling.py, partway through it)
            if problem:
                raise OptionError(problem if single else f"image {indices[0]} of the list: {problem}")
        budget = self._budget_pixels()
        for (shape, _, order), indices in groups.items():
            # in chunks the forward pass takes at once: stacked whole, a group's float copies grew with the list
            # (24 images of 600x600 took 609 MB more than one at a time), outside the memory budget
            per_chunk = len(indices) if budget is None else max(1, budget // (shape[0] * shape[1]))
            for start in range(0, len(indices), per_chunk):
                chunk = indices[start:start + per_chunk]
                restored = self._restore(np.stack([parts[i][0] for i in chunk]), order)
                for i, colour in zip(chunk, restored):
                    results[i] = merge_image(colour, parts[i][1], parts[i][2])
        return results

    def release_memory(self) -> None:
        """Hand back the working memory the backend keeps between calls (OpenVINO's compiled shapes keep their
        intermediate buffers): what a server does after a large request. The next call is a little slower."""
        with self._lock:
            if self.backend is not None:
                self.backend.release_memory()

    def close(self) -> None:
        """Free the backend (and its GPU memory). Further calls raise."""
        with self._lock:
            if self.backend is not None:
                self.backend.close()
                self.backend = None

    def __enter__(self) -> Deblurrer:
        return self

    def __copy__(self):
        raise TypeError("a Deblurrer cannot be copied: it holds an open model, which a copy would share (closing one "
                        "broke the other); make another with the same arguments")

    def __deepcopy__(self, memo):
        self.__copy__()

    def __reduce__(self):
        raise TypeError("a Deblurrer cannot be pickled: it holds an open model; make one in each process with the "
                        "same arguments (e.g. in a worker's initializer)")

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Deblurrer({self.backend.describe() if self.backend else 'closed'})"

    # -- internals ----------------------------------------------------------------------------------------------
    def _restore(self, images: np.ndarray, channel_order: str) -> np.ndarray:
        """NxHxWx3 images of one size and dtype -> restored images, same dtype and order."""
        backend = self._backend()
        limits = backend.limits
        batch, padding = preprocess(images, self.conventions, channel_order, min_size=limits.min_hw)
        height, width = batch.shape[2:]
        tile = self._tile_size(height, width)
        if tile is None:
            raw = self._forward(batch)
        else:
            raw = run_tiled(batch, self._forward, tile, self.tile_overlap)
            # the tiles' working memory, which the engine keeps for the next call, is handed back before the whole
            # image is assembled, where it would add to the peak (python -m benchmarks.end_to_end measures it);
            # the next image's first tile allocates it again. On the host only: a GPU backend's is device memory,
            # and there it is its captured CUDA graphs (each photo captured its tiles again, and kept none)
            if backend.device_memory_bytes() is None:
                self.release_memory()
        return postprocess(raw, padding, images.dtype, self.conventions, channel_order)

    def tile_for(self, height: int, width: int) -> tuple[int, int] | None:
        """The tile (h, w) an image of ``height`` x ``width`` runs in under this Deblurrer's budget and the
        artifact's shape limits; None when it runs whole. Planned on the size the network is given (padded to its
        size multiple and smallest size), as a call plans it: an odd size said "whole" where it ran in tiles."""
        return self._tile_size(*self._padded(height, width))

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        return padded_size(height, width, self.conventions.size_multiple, self._backend().limits.min_hw)

    def _tiling_problem(self, height: int, width: int) -> str | None:
        """Why an image of ``height`` x ``width`` cannot be tiled with this ``tile_overlap``, or None. Only the
        sides that are cut count: a thin strip (16x4200, tiled along its length only) was refused for its
        16-pixel height, which no tile cuts."""
        tile = self.tile_for(height, width)
        if tile is None:
            return None
        cut = [side for side, length in zip(tile, self._padded(height, width)) if side < length]
        if not cut or self.tile_overlap < min(cut):
            return None
        limits = self._backend().limits
        why = (f"{self._backend().describe()} takes at most {limits.max_hw[0]}x{limits.max_hw[1]}"
               if tile[0] >= limits.max_hw[0] or tile[1] >= limits.max_hw[1] or self.memory_budget_mb is None
               else f"memory_budget_mb={self.memory_budget_mb}")
        return (f"tile_overlap={self.tile_overlap} cannot tile a {hw_text(height, width)} image: its tiles are "
                f"{hw_text(*tile)} ({why}); give a tile_overlap under {min(cut)}")

    def _tile_size(self, height: int, width: int) -> tuple[int, int] | None:
        limits = self._backend().limits
        if limits.static_shape is not None:
            th, tw = limits.static_shape[1:]
            return None if (height, width) == (th, tw) else (th, tw)
        # even tiles within the budget and the artifact's largest input, or the tile asked for
        return tile_plan(height, width, None if self.tile else self._budget_pixels(), self.conventions.size_multiple,
                         limits.min_hw[0], limits.max_hw, self.tile_overlap, self.tile)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the backend in chunks its limits accept (a fixed batch size is filled by repeating)."""
        backend = self._backend()
        limits = backend.limits
        chunk = limits.fixed_batch or min(limits.max_batch, len(batch))
        budget = self._budget_pixels()
        if budget is not None and not limits.fixed_batch:
            chunk = max(1, min(chunk, budget // (batch.shape[2] * batch.shape[3])))
        outputs = []
        for start in range(0, len(batch), chunk):
            part = batch[start:start + chunk]
            real = len(part)
            if limits.fixed_batch and real < limits.fixed_batch:
                part = np.concatenate([part] + [part[-1:]] * (limits.fixed_batch - real))
            problem = limits.check(part.shape)
            if problem:
                raise ValueError(f"input of shape {part.shape} cannot run on {backend.describe()}: {problem}")
            with self._lock:  # close() takes the same lock: the backend is checked again once it is held
                out = self._backend().run(np.ascontiguousarray(part, dtype=np.float32))
            outputs.append(out[:real])
        return np.concatenate(outputs)

    def _budget_pixels(self) -> int | None:
        """How many input pixels one forward pass may take under the memory budget (None: unbounded)."""
        if self.memory_budget_mb is None:
            return None
        # capped (1 EiB) so that a huge finite budget (1e308 MiB) stays a number instead of overflowing to inf
        return max(1, int(min(float(self.memory_budget_mb), _MAX_BUDGET_MB) * 2**20 // self._bytes_per_pixel))

    def _backend(self) -> Backend:
        if self.backend is None:
            raise DeblurrerClosedError("this Deblurrer has been closed; make a new one (or call it before close(), "
                                       "or inside its with block)")
        return self.backend


# -- option checks: every option's type and range, in one line, before a model is opened ------------------------------
#: Backend options this project's backends take, and what each must be (checked here so a wrong type is one line,
#: not an error from deep inside PyTorch or ONNX Runtime); options not listed are left to the backend.
_BOOL_OPTIONS = ("half", "fold_attention", "static", "check_onnx", "profile")
#: Options that are True, False or None (automatic: on where the device supports them).
_TRISTATE_OPTIONS = ("cuda_graph", "io_binding", "channels_last")
#: The devices the torch backend runs on.
_TORCH_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def _whole(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_options(model, backend, rgb, tile, tile_overlap, memory_budget_mb, backend_options: dict,
                  max_pixels=DEFAULT_MAX_PIXELS) -> None:
    """Refuse a :class:`Deblurrer` option of the wrong type or value with one :class:`OptionError` line naming it."""
    if model is not None and not isinstance(model, str | os.PathLike):
        raise OptionError(f"model must be a file path (str or pathlib.Path) or None for the default model, got "
                          f"{type(model).__name__}")
    if model is not None and not os.fspath(model).strip():
        raise OptionError("model is an empty path; give a model file, or None for the default model")
    if backend is not None and not isinstance(backend, str):
        raise OptionError(f"backend must be a name such as 'onnxruntime' or None, got {backend!r}")
    if backend is not None and backend not in ("auto", *BACKENDS):
        raise OptionError(f"unknown backend {backend!r}; choose one of {('auto', *BACKENDS)} (or None: from the "
                          "model file's extension)")
    check_bool("rgb", rgb)
    if not _whole(tile_overlap) or tile_overlap < 0:
        raise OptionError(f"tile_overlap must be a whole number of pixels >= 0, got {tile_overlap!r}")
    if tile is not None and (not _whole(tile) or tile <= 0):
        raise OptionError(f"tile must be a positive whole number of pixels, got {tile!r}")
    if max_pixels is not None and (not _whole(max_pixels) or max_pixels <= 0):
        raise OptionError(f"max_pixels must be a positive whole number of pixels or None (no limit), got "
                          f"{max_pixels!r}")
    if isinstance(memory_budget_mb, str) and memory_budget_mb == "auto":
        memory_budget_mb = DEFAULT_MEMORY_BUDGET_MB  # resolved once the backend (and its device) is open
    if memory_budget_mb is not None and (not isinstance(memory_budget_mb, int | float | np.integer | np.floating)
                                         or isinstance(memory_budget_mb, bool | np.bool_)):
        raise OptionError(f"memory_budget_mb must be a number of MiB, \"auto\" or None (no budget), got "
                          f"{memory_budget_mb!r}")
    if memory_budget_mb is not None and not (math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
        raise OptionError(f"memory_budget_mb must be a finite number > 0 (or None for no budget), got "
                          f"{memory_budget_mb!r}")
    for name in _BOOL_OPTIONS:
        if name in backend_options:
            check_bool(name, backend_options[name])
    for name in _TRISTATE_OPTIONS:
        if name in backend_options:
            check_tristate(name, backend_options[name])
    check_threads(backend_options.get("threads"))
    device = backend_options.get("device")
    kind = backend or (_backend_kind(Path(model)) if model is not None else None)  # default: loading.py decides
    if device is not None and kind == "torch" and not (isinstance(device, str) and _TORCH_DEVICE.fullmatch(device)):
        # PyTorch itself would fail deep inside for "meta", "CUDA" or "gpu" (or load the weights nowhere)
        raise OptionError(f"device must be 'cpu', 'cuda' or 'cuda:N' on the torch backend, got {device!r}")
    if device is not None and kind == "tensorrt" and not _whole(device):
        raise OptionError(f"device must be a GPU index (0, 1...) on the tensorrt backend, got {device!r}")
    if device is not None and not (isinstance(device, str) or _whole(device)):
        raise OptionError(f"device must be a name such as 'cpu' or 'cuda:0' (or a GPU index), got {device!r}")
    providers = backend_options.get("providers")
    if providers is not None and (isinstance(providers, str) or not isinstance(providers, list | tuple)
                                  or not all(isinstance(p, str) or _provider_with_options(p) for p in providers)):
        raise OptionError(f"providers must be a list of ONNX Runtime provider names or (name, options dict) pairs, "
                          f"got {providers!r}")


def _provider_with_options(provider) -> bool:
    """Whether ``provider`` is ONNX Runtime's ``(name, {option: value})`` form (anything else there makes it print a
    banner and silently fall back to the CPU provider)."""
    return (isinstance(provider, tuple) and len(provider) == 2 and isinstance(provider[0], str)
            and isinstance(provider[1], dict))


def _backend_kind(path: Path) -> str | None:
    """The backend a model file runs on by default, or None when its extension does not say (refused later)."""
    try:
        return backend_for_path(path)
    except ValueError:
        return None


def _open(path: Path, backend: str | None, options: dict) -> Backend:
    """:func:`open_backend`, with an option the chosen backend does not take named in one line."""
    try:
        return open_backend(path, backend, **options)
    except TypeError as exc:
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unexpected is None:
            raise
        raise OptionError(f"the {backend or _backend_kind(path)} backend for {path.name} takes no option "
                          f"{unexpected.group(1)!r}") from None


def _is_single_image(images) -> bool:
    """A numpy array or PIL image where a list of them was expected."""
    return (isinstance(images, np.ndarray) and images.ndim <= 3) or hasattr(images, "getpixel")
