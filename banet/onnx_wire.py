"""Read what the runtime needs from an ONNX file without the ``onnx`` package: the metadata properties, the
graph's inputs and outputs, and its operator counts.

The runtime must not need ``onnx`` to run an ``.onnx``, yet it still checks that a file carrying BANet's
metadata really is the network it describes (:func:`banet.metadata.check_signature`). This is a plain walk
over the protobuf wire format using the field numbers of ``onnx.proto3``; fields it does not need (weights
included) are skipped by length, never copied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from banet.errors import ArtifactError

# onnx.proto3 field numbers
_MODEL_GRAPH, _MODEL_PROPS = 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_OP_TYPE = 4
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE, _DIM_PARAM = 1, 2, 1, 1, 2
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


@dataclass
class OnnxSummary:
    """The parts of an ONNX model the runtime checks: ``props`` (metadata_props), graph ``inputs`` and
    ``outputs`` as (name, dims) with dims ints or symbolic names (initializers excluded), and ``ops``."""

    props: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, list]] = field(default_factory=list)
    outputs: list[tuple[str, list]] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview):
    """Yield (field number, value) for one message: an int for varints, a memoryview for length-delimited
    fields; fixed-width fields are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(data):
        raise ValueError("truncated message")


def _text(value) -> str:
    return bytes(value).decode("utf-8", "replace")


def _first(message: memoryview, number: int):
    return next((v for f, v in _fields(message) if f == number), None)


def _value_info(message: memoryview) -> tuple[str, list]:
    name, dims = "", []
    for number, value in _fields(message):
        if number == _VALUE_NAME:
            name = _text(value)
        elif number == _VALUE_TYPE:
            tensor = _first(value, _TYPE_TENSOR)
            shape = _first(tensor, _TENSOR_SHAPE) if tensor is not None else None
            for f, dim in _fields(shape) if shape is not None else ():
                if f == _SHAPE_DIM:
                    parts = dict(_fields(dim))
                    dims.append(parts[_DIM_VALUE] if _DIM_VALUE in parts else _text(parts.get(_DIM_PARAM, b"?")))
    return name, dims


def _graph(message: memoryview, summary: OnnxSummary) -> None:
    initializers, inputs = set(), []
    for number, value in _fields(message):
        if number == _GRAPH_NODE:
            op = _first(value, _NODE_OP_TYPE)
            summary.ops[_text(op) if op is not None else ""] += 1
        elif number == _GRAPH_INITIALIZER:
            name = _first(value, _TENSOR_NAME)
            initializers.add(_text(name) if name is not None else "")
        elif number == _GRAPH_INPUT:
            inputs.append(_value_info(value))
        elif number == _GRAPH_OUTPUT:
            summary.outputs.append(_value_info(value))
    summary.inputs = [(name, dims) for name, dims in inputs if name not in initializers]


def summarize_onnx(data: bytes, source: str = "model") -> OnnxSummary:
    """Metadata, inputs, outputs and operator counts of a serialized ONNX model; :class:`ArtifactError` (one
    line naming ``source``) for bytes that are not one."""
    summary, graphs = OnnxSummary(), 0
    try:
        for number, value in _fields(memoryview(data)):
            if number == _MODEL_GRAPH:
                graphs += 1
                _graph(value, summary)
            elif number == _MODEL_PROPS:
                entry = dict(_fields(value))
                summary.props[_text(entry.get(_ENTRY_KEY, b""))] = _text(entry.get(_ENTRY_VALUE, b""))
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{source}: not a readable ONNX model (truncated, corrupt or another kind of file: "
                            f"{exc})") from None
    if graphs != 1 or not summary.ops:
        raise ArtifactError(f"{source}: not a readable ONNX model (no graph: truncated, corrupt or another kind of "
                            "file)")
    return summary
