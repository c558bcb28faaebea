"""Numerical parity between two implementations of the network, reported in max abs error and PSNR (dB).

Used after every export (ONNX Runtime vs PyTorch), after every engine build (TensorRT vs ONNX Runtime) and by
the precision reports. Inputs are real photographs (scikit-image's bundled ones) resized to each shape, so
activations have realistic ranges; a graph that is right only at its traced size fails here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from banet.conventions import BANET, Conventions
from banet.processing import from_unit_range, network_output_to_unit, preprocess

#: A forward pass: NCHW float32 network input -> NCHW float32 raw network output.
Forward = Callable[[np.ndarray], np.ndarray]

#: PSNR is reported as this when outputs are bit-identical (MSE 0).
IDENTICAL_PSNR = 200.0

_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")

#: (batch, height, width): square, wide, tall, tiny, non-multiples of 3/5/7, float32-rounding lengths, batch > 1.
DEFAULT_SWEEP: tuple[tuple[int, int, int], ...] = (
    (1, 256, 256), (1, 8, 8), (1, 2, 2), (1, 6, 40), (1, 64, 250), (1, 250, 64), (2, 98, 130), (3, 38, 50),
    (1, 246, 98), (1, 720, 1280),
)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1], capped at ``IDENTICAL_PSNR`` (identical inputs).

    A non-finite error (NaN or inf in an output, e.g. an FP16 overflow) is ``-inf`` dB, so every ``>=`` budget fails
    loudly; ``min(cap, nan)`` would have returned the cap, a perfect score."""
    if not math.isfinite(mse):
        return -math.inf
    return IDENTICAL_PSNR if mse == 0 else min(IDENTICAL_PSNR, 10.0 * math.log10(1.0 / mse))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images in [0, 1] (capped at ``IDENTICAL_PSNR``): the project's one PSNR."""
    return psnr_from_mse(float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def psnr_db(reference: np.ndarray, candidate: np.ndarray, conventions: Conventions = BANET) -> float:
    """PSNR of the candidate's restored image against the reference's (raw network outputs, each clamped to
    [0, 1] by the conventions first)."""
    return psnr(network_output_to_unit(reference.astype(np.float64), conventions),
                network_output_to_unit(candidate.astype(np.float64), conventions))


def changed_8bit(reference: np.ndarray, candidate: np.ndarray, conventions: Conventions = BANET) -> tuple[int, int]:
    """(how many, by how many levels at most): the 8-bit output values (the runtime's uint8 images of raw network
    outputs ``reference`` and ``candidate``) that differ. Why: users compare the pixels they get, and a drift in dB
    does not say whether any of them changed (8-bit rounding alone is about 59 dB)."""
    levels = [from_unit_range(network_output_to_unit(raw.astype(np.float32), conventions), np.uint8)
              for raw in (reference, candidate)]
    difference = np.abs(levels[0].astype(np.int16) - levels[1])
    return int(np.count_nonzero(difference)), int(difference.max(initial=0))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between two HxWx3 images in [0, 1] (scikit-image)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(b, a, data_range=1.0, channel_axis=2))


#: Restores a list of HxWx3 float images in [0, 1] (sizes may differ).
Restorer = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def evaluate_pairs(restore: Restorer, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                   with_ssim: bool = True) -> dict:
    """Mean PSNR (and SSIM) of the blurred inputs and of the restored outputs against the sharp images."""
    names = [p[0] for p in pairs]
    blurred = [p[1] for p in pairs]
    sharp = [p[2] for p in pairs]
    restored = restore(blurred)
    per_image = []
    for name, b, r, s in zip(names, blurred, restored, sharp):
        row = {"name": name, "psnr_blurred": psnr(b, s), "psnr_deblurred": psnr(r, s)}
        if with_ssim:
            row.update(ssim_blurred=ssim(b, s), ssim_deblurred=ssim(r, s))
        per_image.append(row)
    summary = {k: float(np.mean([row[k] for row in per_image])) for k in per_image[0] if k != "name"}
    summary["psnr_gain"] = summary["psnr_deblurred"] - summary["psnr_blurred"]
    if with_ssim:
        summary["ssim_gain"] = summary["ssim_deblurred"] - summary["ssim_blurred"]
    summary["images"] = len(per_image)
    return {"summary": summary, "per_image": per_image, "restored": restored}


def photo_batch(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic NCHW network input built from real photos (random crop, resized to HxW)."""
    out, _ = preprocess(photo_images(batch, height, width, seed), channel_order="RGB", pad=False)
    return out


def photo_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """The photos of :func:`photo_batch` as uint8 ``NxHxWx3`` RGB images (what an app hands over)."""
    import cv2
    import skimage.data
    from skimage.io import imread

    rng = np.random.default_rng([seed, batch, height, width])
    images = []
    for i in range(batch):
        photo = imread(os.path.join(skimage.data.data_dir, _PHOTOS[(seed + i) % len(_PHOTOS)]))[..., :3]
        ph, pw = photo.shape[:2]
        ch = int(rng.integers(max(1, ph // 2), ph + 1))
        cw = int(min(pw, max(1, round(ch * width / height))))
        y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = photo[y:y + ch, x:x + cw]
        images.append(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    return np.stack(images)


@dataclass
class ShapeResult:
    shape: tuple[int, int, int]
    max_abs_error: float
    psnr_db: float
    passed: bool
    error: str | None = None
    #: share of the 8-bit output values (:func:`changed_8bit`) that differ from the reference's: whether a user gets
    #: the same pixels (None where the candidate gave no comparable output)
    changed_8bit: float | None = None


class SweepVerdicts:
    """What every per-shape report of a dataclass with ``results`` (each with ``passed`` and ``psnr_db``) says."""

    results: list

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def worst_psnr_db(self) -> float:
        return min(r.psnr_db for r in self.results)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data


@dataclass
class ParityReport(SweepVerdicts):
    """Per-shape results of a sweep and the thresholds they were held to."""

    reference: str
    candidate: str
    min_psnr_db: float
    max_abs_error: float | None
    results: list[ShapeResult]
    #: the same file on other engines, held to the same thresholds (``export/to_onnx.py --check-openvino``)
    others: list[ParityReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return super().passed and all(other.passed for other in self.others)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["others"] = [other.to_dict() for other in self.others]
        return data

    def table(self) -> str:
        lines = [f"{self.candidate} vs {self.reference} (pass: PSNR >= {self.min_psnr_db:g} dB"
                 + (f", max abs <= {self.max_abs_error:g})" if self.max_abs_error is not None else ")"),
                 f"{'shape (NxHxW)':>16} {'max abs err':>12} {'PSNR dB':>9} {'8-bit changed':>13}  result"]
        for r in self.results:
            shape = "x".join(map(str, r.shape))
            verdict = "ok" if r.passed else f"FAIL{': ' + r.error if r.error else ''}"
            changed = "-" if r.changed_8bit is None else f"{100 * r.changed_8bit:.4f}%"
            lines.append(f"{shape:>16} {r.max_abs_error:12.3e} {r.psnr_db:9.2f} {changed:>13}  {verdict}")
        return "\n".join(lines + [other.table() for other in self.others])


def compare(reference: Forward, candidate: Forward, shapes: Sequence[tuple[int, int, int]], min_psnr_db: float,
            max_abs_error: float | None, reference_name: str = "reference", candidate_name: str = "candidate",
            seed: int = 0, conventions: Conventions = BANET) -> ParityReport:
    """Run both forwards on photo inputs of each shape and hold the candidate to the thresholds.

    A candidate that raises (for example an ONNX Runtime shape error at an untraced size) fails that shape.
    """
    results = []
    for shape in shapes:
        x = photo_batch(*shape, seed=seed)
        ref = reference(x)
        try:
            cand = candidate(x)
        except Exception as exc:  # a failure of the candidate is a failed shape, reported, not a crash
            results.append(ShapeResult(tuple(shape), math.inf, 0.0, False, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        results.append(judge(tuple(shape), ref, cand, min_psnr_db, max_abs_error, conventions))
    return ParityReport(reference_name, candidate_name, min_psnr_db, max_abs_error, results)


def judge(shape: tuple, reference: np.ndarray, candidate: np.ndarray, min_psnr_db: float,
          max_abs_error: float | None, conventions: Conventions = BANET) -> ShapeResult:
    """One shape's verdict: the candidate's output must be finite, of the reference's shape, within
    ``min_psnr_db`` PSNR and (where given) ``max_abs_error`` of the reference."""
    if candidate.shape != reference.shape:
        return ShapeResult(shape, math.inf, 0.0, False,
                           f"output shape {candidate.shape} != reference {reference.shape}")
    if not np.isfinite(candidate).all():
        return ShapeResult(shape, math.inf, 0.0, False, "NaN or Inf in output")
    err = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
    psnr = psnr_db(reference, candidate, conventions)
    changed = changed_8bit(reference, candidate, conventions)[0] / reference.size
    return ShapeResult(shape, err, psnr, psnr >= min_psnr_db and (max_abs_error is None or err <= max_abs_error),
                       changed_8bit=changed)
