"""ONNX files through the ``onnx`` package, for the tools that edit graphs (export, quantization, engine
builds, Triton): loading with one-line errors and writing BANet's metadata. The runtime reads ONNX metadata
without ``onnx`` (:func:`banet.metadata.read_onnx_metadata`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from banet.conventions import METADATA_PREFIX
from banet.errors import ArtifactError
from banet.metadata import ModelMetadata, check_signature, existing_onnx
from banet.outputs import NAME_MAX, OutputBusyError, clear_partial, lock_path, output_lock, write_error


def write_onnx_metadata(model, metadata: ModelMetadata) -> None:
    """Replace the ``banet.*`` entries of an in-memory ``onnx.ModelProto``'s ``metadata_props``."""
    keep = [(e.key, e.value) for e in model.metadata_props if not e.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(metadata.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def load_onnx(path: str | Path, load_external_data: bool = False):
    """``onnx.load`` with one-line errors: a missing file, a directory, or bytes that are not an ONNX model.

    Always read as a binary ONNX file, whatever the extension: ``onnx.load`` picks a text parser from ``.json``,
    ``.onnxtxt`` or ``.textproto`` (an engine's manifest handed over as ``--onnx``), whose errors it raises as
    tracebacks of their own; here such a file is one line like any other file that is not an ONNX model."""
    import onnx
    from google.protobuf.message import Error as ProtobufError

    path = existing_onnx(path)
    hint = "" if path.suffix.lower() == ".onnx" else f"; ONNX files end in .onnx, not {path.suffix or 'nothing'}"
    try:
        model = onnx.load_model(str(path), format="protobuf", load_external_data=load_external_data)
    except (ProtobufError, RuntimeWarning, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable ONNX model (truncated, corrupt or another kind of file: "
                            f"{type(exc).__name__}){hint}") from None
    if not model.graph.node:
        raise ArtifactError(f"{path}: not a readable ONNX model (no graph: truncated, corrupt or another kind of "
                            f"file){hint}")
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
    that name is refused (``IsADirectoryError``), never removed. Call it inside :func:`writing`, so that what is
    removed is never the staged file of another run that is still going."""
    tmp = staging_path(output)
    clear_partial(tmp)
    return tmp


@contextlib.contextmanager
def writing(output: str | Path, error: type[Exception], lock=output_lock) -> Iterator[None]:
    """Hold the right to write ``output`` and its staged names (:func:`banet.outputs.output_lock`; ``lock``: an engine
    build's :func:`banet.manifest.build_lock`) for as long as the block runs: a second export, quantization, app
    graph or build to the same file is refused in one line (``error``) instead of removing or renaming the first
    one's staged file. The lock dies with its process, so a killed run never blocks the next one."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(lock(output))
    except OutputBusyError as exc:
        raise error(str(exc)) from None
    except OSError as exc:
        raise error(write_error(exc, lock_path(output))) from None
    with stack:
        yield


def refused_path(output: str | Path) -> Path:
    """Where a file refused by its verification is left (:func:`banet.artifacts.failed_path`'s name when it fits)."""
    return sibling(output, ".failed" + Path(output).suffix)
