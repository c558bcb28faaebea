"""ONNX files through the ``onnx`` package, for the tools that edit graphs (export, quantization, engine
builds, Triton): loading with one-line errors and writing BANet's metadata. The runtime reads ONNX metadata
without ``onnx`` (:func:`banet.metadata.read_onnx_metadata`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from banet.conventions import METADATA_PREFIX
from banet.errors import ArtifactError
from banet.metadata import ModelMetadata, check_signature, existing_onnx
from banet.outputs import NAME_MAX, clear_partial


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


def sibling(path: str | Path, tail: str) -> Path:
    """``<stem><tail>`` next to ``path`` (``x.onnx`` -> ``x.partial.onnx`` for tail ``.partial.onnx``), or, where that
    name would be longer than file systems allow (255 bytes), a digest of ``path``'s name with the same tail: an
    output name near the limit must still be writable through its staged and ``.failed`` names."""
    path = Path(path)
    name = path.stem + tail
    if len(os.fsencode(name)) > NAME_MAX:
        name = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16] + tail
    return path.with_name(name)


def staging_path(output: str | Path) -> Path:
    """Where an ONNX is written, checked and verified before it is renamed to ``output``."""
    return sibling(output, ".partial" + Path(output).suffix)


def claim_staging(output: str | Path) -> Path:
    """:func:`staging_path`, with whatever entry is at that name removed first (:func:`banet.outputs.clear_partial`:
    a file a killed run left, or a symbolic link planted there, only the link), so that the exporter or quantizer
    writes a file of its own instead of writing through the link and renaming the link over ``output``. A folder at
    that name is refused (``IsADirectoryError``), never removed."""
    tmp = staging_path(output)
    clear_partial(tmp)
    return tmp


def refused_path(output: str | Path) -> Path:
    """Where a file refused by its verification is left (:func:`banet.artifacts.failed_path`'s name when it fits)."""
    return sibling(output, ".failed" + Path(output).suffix)
