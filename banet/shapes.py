"""The one parser of sizes and shapes typed by users: height before width everywhere (``HxW``, ``NxHxW``), as the
tensors are laid out (NCHW), and the one bound on the batch they may ask for (:data:`MAX_BATCH`). Errors are
:class:`ShapeError`, which argparse prints as its message."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

from banet.config import activation_bytes_per_pixel


class ShapeError(argparse.ArgumentTypeError, ValueError):
    """A size or shape that does not parse; the message shows the expected form."""


#: Largest batch (N) of a shape given to the export commands: an engine profile's ``--min/--opt/--max``, a static
#: export's ``--batch``, a verification or calibration shape's. An engine holds working memory for its profile's
#: largest batch and an export traces and verifies its whole batch at once, so the memory grows with N (256 images
#: of 256x256 are already about 23 GB of activations by the default model's estimate,
#: :func:`banet.config.activation_bytes_per_pixel`), while the runtime runs longer lists in chunks of the
#: artifact's batch anyway. A larger N is a typo, refused in one line before TensorRT or ONNX Runtime sees it.
MAX_BATCH = 256

#: Smallest height/width of an image taken: a 1-pixel image has no blur to remove.
MIN_SIDE = 2
#: Largest image taken by default, in pixels (200 MP: above the largest camera sensors, far below a decompression
#: bomb's billions), whether read from a file or handed to the API: ``read_image(max_pixels=)`` and the CLI's
#: ``--max-megapixels`` raise it for files, ``Deblurrer(max_pixels=)`` for images handed to it (None: no limit).
#: Here, in the core, so that a command line's ``--help`` states it without loading the runtime.
DEFAULT_MAX_PIXELS = 200_000_000

#: Where :func:`batch_problem` estimates the memory of a batch whose image size is not known (a dynamic export's
#: ``--batch``): the largest shape of the default verification sweep.
_UNSIZED = (720, 1280)


def batch_problem(batch: int, height: int | None = None, width: int | None = None) -> str | None:
    """Why ``batch`` (of images of ``height`` x ``width``, when known) is refused, or None: over :data:`MAX_BATCH`.

    The reason gives the working memory such a batch would need, by the default model's activation estimate."""
    if batch <= MAX_BATCH:
        return None
    h, w = (height, width) if height and width else _UNSIZED
    return (f"batch {batch} is over the limit of {MAX_BATCH}: the whole batch is held in memory at once (about "
            f"{_bytes_text(batch * h * w * _bytes_per_pixel())} of activations at {hw_text(h, w)} for the default "
            f"model, more for larger networks), and the runtime runs longer lists in chunks of the artifact's "
            "batch anyway")


def _bytes_per_pixel() -> int:
    """The default model's working memory per input pixel (its defaults imported only when a batch is refused)."""
    from banet.defaults import DEFAULT_CONFIG

    return activation_bytes_per_pixel(DEFAULT_CONFIG)


def _bytes_text(count: float) -> str:
    """1.3e12 -> ``"1.3 TB"``."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def parse_batch(text: str) -> int:
    """``"4"`` -> 4: a batch size from 1 to :data:`MAX_BATCH`."""
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1:
        raise ShapeError(f"expected a batch size (a whole number >= 1), got {text!r}")
    if problem := batch_problem(int(value)):
        raise ShapeError(problem)
    return int(value)


def parse_hw(text: str, square_from_one: bool = False) -> tuple[int, int]:
    """``"720x1280"`` -> (720, 1280); with ``square_from_one``, ``"256"`` -> (256, 256) too."""
    match = re.fullmatch(r"(\d+)(?:[xX](\d+))?", str(text).strip())
    if not match or (match.group(2) is None and not square_from_one):
        example = "HxW such as 720x1280" + (" (or one number for a square)" if square_from_one else "")
        raise ShapeError(f"expected {example}, got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def parse_nhw(text: str) -> tuple[int, int, int]:
    """``"NxHxW"``, ``"HxW"`` (batch 1) or ``"Nx3xHxW"`` -> (N, H, W); N at most :data:`MAX_BATCH`."""
    parts = str(text).lower().replace(",", "x").split("x")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (2, 3, 4):
        raise ShapeError(f"expected a shape NxHxW, HxW or Nx3xHxW such as 1x720x1280, got {text!r}")
    values = [int(p) for p in parts]
    if len(values) == 4:
        if values[1] != 3:
            raise ShapeError(f"{text!r}: BANet takes 3 channels, got {values[1]}")
        values = [values[0], values[2], values[3]]
    if len(values) == 2:
        values = [1, *values]
    if problem := batch_problem(*values):
        raise ShapeError(f"{text}: {problem}")
    return values[0], values[1], values[2]


def sweep_shape_problem(batch: int, height: int, width: int, check_batch: bool = True) -> str | None:
    """Why a shape a model is checked on (``--verify-sizes`` of the export commands) is refused, or None: a batch,
    height or width below 1 (nothing to compare: a division by zero in the metrics), an image over
    :data:`DEFAULT_MAX_PIXELS` (the check allocates it several times over, in float32 too), and with
    ``check_batch`` a batch over :data:`MAX_BATCH` (:func:`batch_problem`)."""
    if min(batch, height, width) < 1:
        return "batch, height and width must be >= 1"
    if height * width > DEFAULT_MAX_PIXELS:
        return (f"{hw_text(height, width)} is {height * width / 1e6:,.0f} MP, over the "
                f"{DEFAULT_MAX_PIXELS // 10**6} MP the runtime takes by default; the check holds it several times in "
                "memory, so check a smaller size")
    return batch_problem(batch, height, width) if check_batch else None


def sweep_problem(shapes: Iterable[tuple[int, int, int]], check_batch: bool = True) -> str | None:
    """The refusal of the first of ``shapes`` (``--verify-sizes``) that :func:`sweep_shape_problem` refuses, as one
    line naming it, or None: what export/to_onnx.py (through ``validate_options``) and export/to_app.py both say."""
    for shape in shapes:
        if problem := sweep_shape_problem(*shape, check_batch=check_batch):
            return f"verification shape {'x'.join(map(str, shape))}: {problem}"
    return None


def hw_text(height: int, width: int) -> str:
    """(720, 1280) -> ``"720x1280"``: how sizes are written in results and messages."""
    return f"{height}x{width}"
