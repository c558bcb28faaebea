"""Hold an app graph (:mod:`export.app_graph`) to the runtime's pixels and to PyTorch, before it is written.

Two references on every shape, from the same uint8 photos an app would hand over:

- **the runtime's path**: the network file it was made from, run by ONNX Runtime between
  :func:`banet.processing.preprocess` and :func:`~banet.processing.postprocess` (what ``Deblurrer`` does), in the
  graph's tiles through :func:`runtime.tiling.run_tiled` where it tiles. The app graph must give the same pixels:
  at least :data:`MIN_IDENTICAL` of them equal and none more than one level apart (a different kernel choice may
  round one value the other way; a wrong offset, channel order, padding, tile or rounding moves far more);
- **PyTorch FP32** on the same padded input (and tiles): the drift in PSNR (dB, of the uint8 images), held to the
  precision's floor (:data:`banet.precision.MIN_PSNR_DB`).

On the first shape the same photos are also given as RGBA (random alpha): the output must not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banet.metadata import ModelMetadata
from banet.precision import MIN_PSNR_DB
from banet.processing import postprocess, preprocess
from export.app_graph import FINITE, INPUT, OUTPUT
from export.parity import DEFAULT_SWEEP, Forward, SweepVerdicts, photo_images, psnr

#: The export sweep's shapes (even sides: their PyTorch outputs are in the reference cache after an export) and
#: odd ones, which only an app graph pads itself: a 5x3 crop (smaller than the export's 8 px: edge padding), odd
#: sides, batch 2.
APP_SWEEP: tuple[tuple[int, int, int], ...] = DEFAULT_SWEEP + ((1, 5, 3), (1, 37, 53), (2, 99, 131))
#: Least fraction of pixels that must equal the runtime path's.
MIN_IDENTICAL = 0.999
#: An app graph run: uint8 NxHxWx(3|4) images -> (uint8 NxHxWx3 deblurred, bool N finite).
AppRun = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class AppShapeResult:
    shape: tuple[int, int, int]
    identical: float  # fraction of values equal to the runtime path's
    max_level_difference: int  # largest difference from the runtime path, in uint8 levels
    psnr_db: float  # against PyTorch FP32
    passed: bool
    error: str | None = None


@dataclass
class AppReport(SweepVerdicts):
    """Per-shape results of an app graph against the runtime path and PyTorch FP32."""

    artifact: str
    precision: str
    min_psnr_db: float
    results: list[AppShapeResult]
    #: False for another build of ONNX Runtime (onnxruntime-web): its kernels may round differently, so the pixel
    #: rule is reported, not required; the precision's drift floor holds as for every artifact.
    hold_pixels: bool = True

    def table(self) -> str:
        rule = (f">= {MIN_IDENTICAL:.1%} equal, none > 1 level apart" if self.hold_pixels
                else "reported, another build's kernels")
        lines = [f"{self.artifact} ({self.precision}): pixels vs the runtime path ({rule}), PSNR vs PyTorch FP32 "
                 f"(>= {self.min_psnr_db:g} dB)",
                 f"{'shape (NxHxW)':>16} {'equal':>9} {'max diff':>8} {'PSNR dB':>9}  result"]
        for r in self.results:
            verdict = "ok" if r.passed else f"FAIL{': ' + r.error if r.error else ''}"
            lines.append(f"{'x'.join(map(str, r.shape)):>16} {r.identical:9.5%} {r.max_level_difference:8d} "
                         f"{r.psnr_db:9.2f}  {verdict}")
        return "\n".join(lines)


def _uint8_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0)


def judge_shape(shape: tuple[int, int, int], app: np.ndarray, finite: np.ndarray, runtime: np.ndarray,
                pytorch: np.ndarray, min_psnr_db: float, hold_pixels: bool = True) -> AppShapeResult:
    """One shape's verdict from the three uint8 outputs (all in the same channel order) and the finite flags
    (``hold_pixels``: whether the pixel rule against the runtime path is required or only reported)."""
    if app.shape != runtime.shape or app.dtype != np.uint8:
        return AppShapeResult(shape, 0.0, 255, -math.inf, False,
                              f"output {app.dtype} {app.shape}, expected uint8 {runtime.shape}")
    difference = np.abs(app.astype(np.int16) - runtime.astype(np.int16))
    identical, worst = float(np.mean(difference == 0)), int(difference.max())
    drift = _uint8_psnr(pytorch, app)
    problems = []
    if not np.asarray(finite).all():
        problems.append("finite is false on a finite output")
    if hold_pixels and (worst > 1 or identical < MIN_IDENTICAL):
        problems.append(f"{1 - identical:.3%} of values differ from the runtime path, by up to {worst}")
    if drift < min_psnr_db:
        problems.append(f"{drift:.2f} dB from PyTorch FP32, below {min_psnr_db:g} dB")
    return AppShapeResult(shape, identical, worst, drift, not problems, "; ".join(problems) or None)


def tiled(forward: Forward, tile: int | None, overlap: int, multiple: int) -> Forward:
    """``forward`` as the runtime runs it in tiles of at most ``tile`` (:func:`runtime.tiling.even_tile` sides,
    :func:`runtime.tiling.run_tiled` blending); ``forward`` itself where one tile covers the input."""
    from runtime.tiling import even_tile, run_tiled

    def run(batch: np.ndarray) -> np.ndarray:
        if tile is None:
            return forward(batch)
        sides = tuple(even_tile(length, tile, overlap, multiple) for length in batch.shape[2:])
        return forward(batch) if sides == batch.shape[2:] else run_tiled(batch, forward, sides, overlap)

    return run


def check_app_graphs(apps: Mapping[str, AppRun], network: Forward, pytorch: Forward, metadata: ModelMetadata,
                     channel_order: str, shapes: Sequence[tuple[int, int, int]] = APP_SWEEP,
                     min_psnr_db: float | None = None, seed: int = 0, tile: int | None = None,
                     overlap: int = 32, drift_only: Sequence[str] = ()) -> list[AppReport]:
    """Run each app graph (``apps``: name -> uint8 NHWC images -> (deblurred, finite); an ``.onnx`` and its
    ``.ort``) on photos of each shape against the runtime path over ``network`` and against ``pytorch`` (both NCHW
    float32 -> raw output; both tiled as the graph tiles, with ``tile``), each reference computed once for all.
    The apps named in ``drift_only`` (another build of ONNX Runtime) are held to the drift floor alone."""
    floor = MIN_PSNR_DB[metadata.precision] if min_psnr_db is None else min_psnr_db
    multiple = metadata.conventions.size_multiple
    network, pytorch = tiled(network, tile, overlap, multiple), tiled(pytorch, tile, overlap, multiple)
    results: dict[str, list[AppShapeResult]] = {name: [] for name in apps}
    for index, shape in enumerate(shapes):
        rgb = photo_images(*shape, seed=seed)
        images = rgb if channel_order == "RGB" else rgb[..., ::-1].copy()
        batch, padding = preprocess(rgb, metadata.conventions, "RGB", min_size=(metadata.min_size,) * 2)
        runtime = postprocess(network(batch), padding, np.uint8, metadata.conventions, channel_order)
        reference = postprocess(pytorch(batch), padding, np.uint8, metadata.conventions, channel_order)
        for name, app_run in apps.items():
            results[name].append(_run_shape(app_run, tuple(shape), images, runtime, reference, floor,
                                            with_alpha=index == 0, seed=seed, hold_pixels=name not in drift_only))
    return [AppReport(name, metadata.precision, floor, shape_results, name not in drift_only)
            for name, shape_results in results.items()]


def _run_shape(app_run: AppRun, shape: tuple[int, int, int], images: np.ndarray, runtime: np.ndarray,
               reference: np.ndarray, floor: float, with_alpha: bool, seed: int,
               hold_pixels: bool = True) -> AppShapeResult:
    try:
        app, finite = app_run(images)
        if with_alpha:  # an RGBA input (what Android and browsers hold) gives the same pixels
            alpha = np.random.default_rng(seed).integers(0, 256, images.shape[:3] + (1,), dtype=np.uint8)
            with_alpha_out, _ = app_run(np.concatenate([images, alpha], axis=3))
            if not np.array_equal(with_alpha_out, app):
                raise ValueError("an RGBA input (random alpha) changed the output")
    except Exception as exc:  # a failure of the graph is a failed shape, reported, not a crash
        return AppShapeResult(shape, 0.0, 255, -math.inf, False, f"{type(exc).__name__}: {exc}"[:300])
    return judge_shape(shape, app, finite, runtime, reference, floor, hold_pixels)


def onnxruntime_app_run(path: Path, threads: int | None = None) -> AppRun:
    """An app graph file (``.onnx`` or ``.ort``) on ONNX Runtime's CPU provider: images -> (deblurred, finite)."""
    from runtime.backends.onnxruntime_backend import open_session

    session = open_session(path, ["CPUExecutionProvider"], threads)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        deblurred, finite = session.run([OUTPUT, FINITE], {INPUT: images})
        return deblurred, finite

    return run


def openvino_app_run(path: Path) -> AppRun:
    """An app graph ``.onnx`` on OpenVINO's CPU plugin, in float32 arithmetic where the file is float (as the
    runtime's OpenVINO backend runs it; an INT8 file runs OpenVINO's own integer kernels): images ->
    (deblurred, finite). What an app built on OpenVINO's C++ or Python API does."""
    from runtime.backends.openvino_backend import import_openvino

    ov = import_openvino()
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = compiled({INPUT: images})
        return result[compiled.output(OUTPUT)], result[compiled.output(FINITE)]

    return run
