"""What a reduced precision may cost, in one place: the INT8 held-out budget and how a file's recorded cost is read.

``calibration.quantize`` measures every INT8 file it writes on the held-out photos (restoration PSNR against the
FP32 model's, per CPU backend that can run it) and records the result in the file's metadata under
``banet.int8_heldout``. The runtime reads it back before it runs an INT8 file the user asked for by precision, and
refuses a file that has no record or costs more than the budget.
"""

from __future__ import annotations

import json

from banet.metadata import ModelMetadata

#: Least PSNR (dB) against FP32 a derived artifact of each precision may show: below it an engine build fails (kept as
#: <name>.failed.engine; compared with ONNX Runtime FP32) and an app graph is refused (compared with PyTorch FP32).
MIN_PSNR_DB = {"fp32": 70.0, "fp16": 40.0, "int8": 25.0}
#: Most restoration PSNR an INT8 file may lose against FP32 on the held-out photos (dB), per backend.
INT8_HELDOUT_BUDGET_DB = 0.3
#: Metadata key (under ``banet.``) of the held-out record.
HELDOUT_KEY = "int8_heldout"


def heldout_record(metadata: ModelMetadata) -> dict | None:
    """The held-out record of an INT8 file (``{"delta_psnr_db": {backend: dB}, ...}``), or None if it has none."""
    raw = metadata.extra.get(HELDOUT_KEY)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("delta_psnr_db"), dict) else None


#: Key of the record's OpenVINO losses per int8 unit class (:func:`banet.machine.int8_units`): this CPU's and those of
#: the classes below it, measured by ``calibration.heldout.openvino_by_units``.
OPENVINO_BY_UNITS = "openvino_by_units"


def _recorded_delta(record: dict, backend: str) -> tuple[object, str]:
    """The record's held-out change on ``backend`` as it holds on this CPU, and where it was measured as words for a
    message: on OpenVINO the entry for this CPU's int8 units where the record measured each class
    (:data:`OPENVINO_BY_UNITS`; OpenVINO's int8 kernels differ by unit), else the backend's one entry ("")."""
    by_units = record.get(OPENVINO_BY_UNITS)
    if backend == "openvino" and isinstance(by_units, dict):
        from banet.machine import int8_units

        here = int8_units()
        if here in by_units:
            where = " on this CPU (no int8 dot-product units)" if here == "none" else \
                f" with this CPU's {here} int8 units"
            return by_units[here], where
    return record["delta_psnr_db"].get(backend), ""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int8_loss(metadata: ModelMetadata, backend: str) -> float | None:
    """Restoration PSNR (dB) the INT8 file recorded losing on the held-out photos on ``backend`` (on OpenVINO: with
    this CPU's int8 units, where recorded per class), or None where it has no record for that backend."""
    record = heldout_record(metadata)
    delta = None if record is None else _recorded_delta(record, backend)[0]
    return -float(delta) if _number(delta) else None


def int8_refusal(metadata: ModelMetadata, backend: str, name: str = "the INT8 file") -> str | None:
    """Why ``backend`` should not run this INT8 file within the budget, or None if its recorded cost fits."""
    record = heldout_record(metadata)
    if record is None:
        return (f"{name} has no held-out quality record; make it with python -m calibration.quantize, which "
                "measures and records it")
    delta, where = _recorded_delta(record, backend)
    if not _number(delta):
        measured = ", ".join(sorted(record["delta_psnr_db"])) or "none"
        return (f"{name} was not measured on {backend} (measured on: {measured}); make it again where {backend} "
                "is installed")
    if -delta > INT8_HELDOUT_BUDGET_DB:
        return (f"{name} loses {-delta:.2f} dB on the held-out photos on {backend}{where}, over the "
                f"{INT8_HELDOUT_BUDGET_DB:g} dB INT8 budget")
    return None
