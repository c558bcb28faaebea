"""Parity as a Polygraphy comparison: two Polygraphy runners (an engine's ``TrtRunner``, ``OnnxrtRunner`` on an
ONNX file, ...) run the same real-photo inputs through ``Comparator.run``, and ``Comparator.compare_accuracy``
holds the candidate to this project's criteria (PSNR in dB on the network's output range, optionally a largest
absolute difference) with a compare function of ours.

The result is the same :class:`export.parity.ParityReport` that every other parity check writes, so an engine's
manifest records the same numbers whether the comparison ran through Polygraphy or not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from export.parity import ParityReport, ShapeResult, judge, photo_batch

log = logging.getLogger(__name__)


def shape_of(batch: np.ndarray) -> tuple[int, int, int]:
    """(N, H, W) of an NCHW array: how parity reports name a shape."""
    return int(batch.shape[0]), int(batch.shape[2]), int(batch.shape[3])


def psnr_compare_func(min_psnr_db: float, max_abs_error: float | None, collected: list[ShapeResult]):
    """A Polygraphy compare function: for each output, PSNR and largest difference of candidate vs reference,
    passed when PSNR >= ``min_psnr_db`` (and the difference <= ``max_abs_error`` where given). Every comparison is
    appended to ``collected`` as a :class:`ShapeResult`."""

    def compare(reference, candidate) -> dict[str, bool]:
        verdicts = {}
        for name, ref in reference.items():
            ref = np.asarray(ref)
            shape = shape_of(ref) if ref.ndim == 4 else tuple(ref.shape)
            if name not in candidate:
                collected.append(ShapeResult(shape, math.inf, 0.0, False, f"no output {name!r} from the candidate"))
                verdicts[name] = False
                continue
            result = judge(shape, ref.astype(np.float32), np.asarray(candidate[name]).astype(np.float32),
                           min_psnr_db, max_abs_error)
            collected.append(result)
            verdicts[name] = result.passed
        return verdicts

    return compare


def compare_runners(reference, candidate, shapes: Sequence[tuple[int, int, int]], min_psnr_db: float,
                    max_abs_error: float | None = None, input_name: str = "input", seed: int = 0,
                    reference_name: str | None = None, candidate_name: str | None = None) -> ParityReport:
    """Run ``reference`` and ``candidate`` (Polygraphy runners, not yet activated) on a real-photo batch of each
    (N, H, W) in ``shapes`` and compare them with :func:`psnr_compare_func`.

    A candidate that cannot run (a shape outside its profile, a CUDA error) fails every shape with the reason
    instead of raising: the report says what happened.
    """
    from export.trt.polygraphy_build import polygraphy_backend, polygraphy_log

    polygraphy_backend(None)  # before Polygraphy's first import in this process fixes its TensorRT flavour
    from polygraphy.comparator import Comparator

    reference_name = reference_name or reference.name
    candidate_name = candidate_name or candidate.name
    feeds = [{input_name: photo_batch(*shape, seed=seed)} for shape in shapes]
    collected: list[ShapeResult] = []
    with polygraphy_log():
        try:
            results = Comparator.run([reference, candidate], data_loader=feeds)
        except Exception as exc:  # noqa: BLE001 - Polygraphy raises its own and the runners' exceptions
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            failed = [ShapeResult(tuple(s), math.inf, 0.0, False, reason) for s in shapes]
            return ParityReport(reference_name, candidate_name, min_psnr_db, max_abs_error, failed)
        accuracy = Comparator.compare_accuracy(results, compare_func=psnr_compare_func(min_psnr_db, max_abs_error,
                                                                                      collected))
    report = ParityReport(reference_name, candidate_name, min_psnr_db, max_abs_error, collected)
    if bool(accuracy) != report.passed:  # Polygraphy's verdict and ours come from the same compare function
        raise AssertionError(f"Polygraphy's verdict ({bool(accuracy)}) differs from the report's ({report.passed})")
    return report


def onnxruntime_runner(path, name: str | None = None):
    """Polygraphy's ONNX Runtime runner on ``path`` (CPU execution provider: the reference is the same anywhere)."""
    from export.trt.polygraphy_build import polygraphy_backend

    polygraphy_backend(None)  # before Polygraphy's first import in this process fixes its TensorRT flavour
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)
