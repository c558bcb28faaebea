"""ONNX files through the ``onnx`` package, for the tools that edit graphs (export, quantization, engine
builds, Triton): loading with one-line errors and writing BANet's metadata. The runtime reads ONNX metadata
without ``onnx`` (:func:`banet.metadata.read_onnx_metadata`)."""

from __future__ import annotations

from pathlib import Path

from banet.conventions import METADATA_PREFIX
from banet.errors import ArtifactError
from banet.metadata import ModelMetadata, check_signature, existing_onnx


def write_onnx_metadata(model, metadata: ModelMetadata) -> None:
    """Replace the ``banet.*`` entries of an in-memory ``onnx.ModelProto``'s ``metadata_props``."""
    keep = [(e.key, e.value) for e in model.metadata_props if not e.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(metadata.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def load_onnx(path: str | Path, load_external_data: bool = False):
    """``onnx.load`` with one-line errors: a missing file, a directory, or bytes that are not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    path = existing_onnx(path)
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable ONNX model (truncated, corrupt or another kind of file: "
                            f"{type(exc).__name__})") from None
    if not model.graph.node:
        raise ArtifactError(f"{path}: not a readable ONNX model (no graph: truncated, corrupt or another kind of "
                            "file)")
    return model


def check_banet_graph(model, metadata: ModelMetadata, source: str = "model") -> None:
    """:func:`banet.metadata.check_signature` for an in-memory ``onnx.ModelProto``."""
    initializers = {t.name for t in model.graph.initializer}

    def pairs(values) -> list[tuple[str, list]]:
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values
                if v.name not in initializers]

    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)
    check_signature(pairs(model.graph.input), pairs(model.graph.output), convs, metadata, source)
