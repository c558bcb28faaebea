"""Which shipped INT8 file the runtime should pick on this CPU: CI hosts differ in int8 units."""

from __future__ import annotations

from banet.artifacts import int8_onnx_path
from banet.defaults import DEFAULT_ONNX


def ov_file_holds_here() -> bool:
    """Whether the shipped ov file's record holds on this CPU: measured for its int8 units, within the budget (with
    AMX; the kernels of CPUs without it lose 2.13 dB). CI hosts differ, so the default-model tests ask."""
    from banet.metadata import read_onnx_metadata
    from banet.precision import INT8_HELDOUT_BUDGET_DB, int8_loss
    from runtime.selection import measured_elsewhere

    path = int8_onnx_path(DEFAULT_ONNX, "ov")
    loss = int8_loss(read_onnx_metadata(path), "openvino")
    return measured_elsewhere(path) is None and loss is not None and loss <= INT8_HELDOUT_BUDGET_DB
