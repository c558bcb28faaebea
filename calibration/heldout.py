"""Restoration quality on the held-out photos: one forward's outputs and PSNR/SSIM, and what an INT8 file costs.

Shared by the drift report (:mod:`calibration.drift`, every precision side by side) and the quantizer
(:mod:`calibration.int8`, which records an INT8 file's cost in the file so the runtime can hold it to the budget).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.parity import Forward
from export.runtime_forwards import onnxruntime_forward

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _heldout_pairs() -> list:
    """The held-out set, made once per process (every INT8 file a process writes is measured on it; read only)."""
    from calibration.photos import heldout_pairs

    return heldout_pairs()


def run_heldout(forward: Forward, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                conventions=None, with_ssim: bool = True) -> tuple[list[np.ndarray], dict]:
    """Raw outputs of ``forward`` on the held-out blurred images, and restoration PSNR (and SSIM) vs the sharp ones.

    Images go through the runtime's pre/post-processing; the metrics come from ``training.evaluate``.
    """
    from banet.conventions import BANET
    from banet.processing import postprocess, preprocess
    from export.parity import evaluate_pairs

    conventions = conventions or BANET
    raws: list[np.ndarray] = []

    def restore(images):
        out = []
        for image in images:
            batch, padding = preprocess(image, conventions, channel_order="RGB")
            raw = forward(batch)
            raws.append(raw)
            out.append(postprocess(raw, padding, np.float32, conventions, channel_order="RGB")[0])
        return out

    summary = evaluate_pairs(restore, pairs, with_ssim)["summary"]
    return raws, summary


def openvino_forward(path: Path, threads: int | None = None, inference_precision: str = "f32",
                     static: bool = True) -> Forward | None:
    """The runtime's OpenVINO backend on ``path`` (compiled per shape, as ``Deblurrer(backend="openvino")`` runs
    it; once for dynamic shapes with ``static=False``; in bfloat16 with ``inference_precision="bf16"``), or None
    where openvino is not installed or the CPU cannot run that precision (the row is then left out)."""
    from export.runtime_forwards import openvino_forward as runtime_openvino_forward
    from runtime.backends.base import BackendUnavailableError

    try:  # the backend says where OpenVINO or the precision is missing
        return runtime_openvino_forward(path, threads, static, inference_precision=inference_precision)
    except BackendUnavailableError as exc:
        log.info("no OpenVINO %s row: %s", inference_precision, exc)
        return None


#: Environment variable that limits how many held-out images an INT8 file is measured on (default: all 26). The
#: test suite sets it, since it quantizes dozens of small models; the record states the count it used.
IMAGES_ENV = "BANET_HELDOUT_IMAGES"


def measure_heldout(fp32_onnx: Path, int8_onnx: Path, threads: int | None = None, shown: str | None = None
                    ) -> dict | None:
    """Restoration PSNR the INT8 file loses against its FP32 ONNX on the held-out photos, per CPU backend that can
    run it here (ONNX Runtime; OpenVINO where installed, and with its float layers in bfloat16 where the CPU has
    the units and OpenVINO compiles it so): the record :func:`banet.precision.int8_refusal` reads.
    None for a model that cannot take the held-out crops (a static shape of another size): it gets no record, so
    ``precision="int8"`` refuses it rather than trusting an unmeasured file. ``shown``: the name the logs give the
    file (the output's, where ``int8_onnx`` is its temporary file)."""
    from banet.machine import cpu_name, int8_units
    from banet.metadata import read_onnx_metadata
    from banet.precision import INT8_HELDOUT_BUDGET_DB, OPENVINO_BY_UNITS
    from runtime.backends.base import BackendUnavailableError
    from runtime.backends.onnxruntime_backend import limits_from_metadata
    from runtime.selection import OPENVINO_INT8_BF16

    name = shown or int8_onnx.name
    pairs = _heldout_pairs()[:int(os.environ.get(IMAGES_ENV) or 0) or None]
    h, w = pairs[0][1].shape[:2]
    unfit = limits_from_metadata(read_onnx_metadata(fp32_onnx)).check((1, 3, h, w))
    if unfit:
        log.info("no held-out record for %s: the held-out crops are %dx%d and %s", name, h, w, unfit)
        return None

    stat = Path(fp32_onnx).stat()
    fp32 = _fp32_psnr(str(fp32_onnx), stat.st_mtime_ns, stat.st_size, len(pairs), threads)
    forwards = {"onnxruntime": onnxruntime_forward(int8_onnx, threads),
                "openvino": openvino_forward(int8_onnx, threads)}
    if read_onnx_metadata(int8_onnx).precision == "int8":  # its float layers in bfloat16, where the CPU has the
        forwards[OPENVINO_INT8_BF16] = openvino_forward(int8_onnx, threads, inference_precision="bf16")  # units
    deltas = {}
    for backend, forward in forwards.items():
        if forward is None:
            continue
        try:
            deltas[backend] = heldout_delta(forward, pairs, fp32)
        except BackendUnavailableError as exc:  # OpenVINO cannot compile the ort flavour with bf16 float layers
            log.info("no %s record for %s: %s", backend, name, str(exc).replace(int8_onnx.name, name))
    log.info("held-out restoration vs FP32: %s dB", deltas)
    units = int8_units()
    record = {"reference": "FP32 ONNX on ONNX Runtime", "images": len(pairs), "fp32_psnr_db": round(fp32, 4),
              "delta_psnr_db": deltas, "budget_db": INT8_HELDOUT_BUDGET_DB,
              "cpu": cpu_name(), "int8_units": units}  # engines' int8 kernels differ by unit
    if "openvino" in deltas and units != "unknown":  # a class to file it under
        record[OPENVINO_BY_UNITS] = openvino_by_units(int8_onnx, fp32, len(pairs), threads,
                                                      {units: deltas["openvino"]}, shown=name)
    return record


#: Environment variable: ``here`` records OpenVINO's loss with this CPU's int8 units only (the test suite sets it:
#: each lesser class costs a process); otherwise every class below them is measured too.
UNITS_ENV = "BANET_HELDOUT_UNITS"


def openvino_by_units(int8_onnx: Path, fp32_psnr: float, count: int, threads: int | None,
                      here: dict[str, float], shown: str | None = None) -> dict[str, float]:
    """OpenVINO's held-out loss for ``int8_onnx`` per int8 unit class: ``here`` (this CPU's class and the loss
    measured with its units) and, for each class below them, the loss measured in a process whose oneDNN runs only
    that class's kernels (:func:`banet.machine.lesser_unit_classes`: the same arithmetic as such a CPU; the ``trt``
    file under ``AVX512_CORE_VNNI`` gave an AMD EPYC's -3.683 dB to the digit). A class that fails to measure is
    left out."""
    from banet.machine import lesser_unit_classes

    by_units = dict(here)
    if os.environ.get(UNITS_ENV, "").strip().lower() == "here":
        return by_units
    for unit, cap in lesser_unit_classes().items():
        delta = _openvino_delta_under_cap(cap, int8_onnx, fp32_psnr, count, threads, shown or int8_onnx.name)
        if delta is not None:
            by_units[unit] = delta
    log.info("OpenVINO held-out restoration vs FP32 per int8 unit class: %s dB", by_units)
    return by_units


def _openvino_delta_under_cap(cap: str, int8_onnx: Path, fp32_psnr: float, count: int,
                              threads: int | None, shown: str) -> float | None:
    """:func:`openvino_delta` in a child process under ``ONEDNN_MAX_CPU_ISA=cap`` (oneDNN reads it once, when it
    loads), or None (logged) where that fails."""
    code = ("import json; from calibration.heldout import openvino_delta; "
            f"print(json.dumps(openvino_delta({str(int8_onnx)!r}, {fp32_psnr!r}, {count!r}, {threads!r})))")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    delta, failed = None, None
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            delta = json.loads(done.stdout.strip().splitlines()[-1])
        else:  # its last line says why (a crash: the signal)
            failed = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:300]
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        failed = str(exc)
    if failed:
        log.warning("no OpenVINO record under ONEDNN_MAX_CPU_ISA=%s for %s: %s", cap, shown,
                    failed.replace(int8_onnx.name, shown))
    return delta if isinstance(delta, (int, float)) and not isinstance(delta, bool) else None


def openvino_delta(int8_onnx: str | Path, fp32_psnr: float, count: int, threads: int | None) -> float | None:
    """Held-out restoration PSNR of ``int8_onnx`` on OpenVINO minus ``fp32_psnr`` (the FP32 file's, on the same
    ``count`` images), or None where OpenVINO cannot run it here."""
    forward = openvino_forward(Path(int8_onnx), threads)
    if forward is None:
        return None
    return heldout_delta(forward, _heldout_pairs()[:count], fp32_psnr)


def heldout_delta(forward: Forward, pairs: Sequence, fp32_psnr: float) -> float:
    """Held-out restoration PSNR of ``forward`` on ``pairs`` minus ``fp32_psnr`` (dB, 4 decimals): a record's entry."""
    return round(run_heldout(forward, pairs, with_ssim=False)[1]["psnr_deblurred"] - fp32_psnr, 4)


@functools.lru_cache(maxsize=4)
def _fp32_psnr(path: str, mtime_ns: int, size: int, count: int, threads: int | None) -> float:
    """Held-out restoration PSNR of an FP32 file, once per file version (both INT8 flavours of one model share it)."""
    return run_heldout(onnxruntime_forward(Path(path), threads), _heldout_pairs()[:count], with_ssim=False)[1][
        "psnr_deblurred"]
