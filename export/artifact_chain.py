"""The one place that answers "is the ONNX of these weights there, is it theirs, and if not, make it".

Names and places come from :mod:`banet.artifacts`; staleness is :func:`banet.metadata.stale_source` (the ONNX
records the sha256 of the weights it was exported from). Every command that needs an exported ONNX it was not
given (quantization, the drift report, engine builds, benchmarks, running a checkpoint on ONNX Runtime) calls
:func:`exported_onnx`: a missing file is exported and verified against PyTorch first, a stale one is refused
with the command that re-exports it (or replaced, where the user asked for that with ``--force``).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path

from banet.artifacts import onnx_path
from banet.metadata import read_onnx_metadata, stale_source
from banet.outputs import shown_path, wait_while_written

log = logging.getLogger(__name__)


def export_command(weights: Path | None, precision: str, output: Path | None = None) -> str:
    """The ``export/to_onnx.py`` line that makes this ONNX (``--weights`` left out for the embedded default)."""
    from banet.defaults import DEFAULT_WEIGHTS

    parts = ["python", "export/to_onnx.py"]
    if weights is not None and Path(weights).resolve() != DEFAULT_WEIGHTS.resolve():
        parts += ["--weights", shown_path(weights)]
    if precision == "fp16":
        parts.append("--fp16")
    if output is not None:
        parts += ["--output", shown_path(output)]
    return shlex.join(parts)


def export_hint(weights: Path | None, precision: str, output: Path | None, source_name: str = "",
                source_sha256: str | None = None) -> str:
    """:func:`export_command` for an artifact made from the checkpoint ``source_name`` (sha256 ``source_sha256``)
    when the user named no ``weights``: the embedded default's line only where it was made from the default, else
    that checkpoint's name as ``--weights``, said to be a bare name (before: the line exported the default model
    under the user's model's name)."""
    from banet.defaults import DEFAULT_WEIGHTS
    from banet.hashing import file_sha256

    if weights is not None or not source_name:
        return export_command(weights, precision, output)
    default = (source_sha256 == file_sha256(DEFAULT_WEIGHTS)) if source_sha256 else source_name == DEFAULT_WEIGHTS.name
    if default:
        return export_command(None, precision, output)
    return (f"{export_command(Path(source_name), precision, output)} (--weights: where {source_name}, the checkpoint "
            "it was exported from, is)")


def fresh_fp32_name(path: Path) -> Path | None:
    """A name next to ``path`` (a non-FP32 ONNX the user gave) for its FP32 export that no file has yet
    (``my_fp16.onnx`` -> ``my.onnx``, else ``my_fp32.onnx``), or None: a hint never names a file that is there."""
    stem = path.stem
    for tail in ("_fp16", "_int8"):
        stem = stem.removesuffix(tail)
    for name in (f"{stem}.onnx", f"{stem}_fp32.onnx"):
        candidate = path.with_name(name)
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    return None


def exported_onnx(weights: str | Path, precision: str = "fp32", path: str | Path | None = None, *,
                  replace_stale: bool = False, verify_shapes: Sequence[tuple[int, int, int]] | None = None) -> Path:
    """The ``precision`` ONNX of ``weights`` at ``path`` (default :func:`banet.artifacts.onnx_path`), exported and
    verified first when missing. One exported from other weights, or of another precision, raises
    :class:`~export.onnx_export.ExportError` naming the command that re-exports it, unless ``replace_stale``."""
    from export.onnx_export import ExportError

    weights = Path(weights)
    path = Path(path) if path is not None else onnx_path(weights.stem, precision)
    # another run exporting it right now (to_onnx.py, or a parallel job needing it too): wait for its file, which is
    # then checked and reused, instead of being refused ("another run is writing ...; write to another --output")
    if wait_while_written(path):
        log.info("waited for another run's export of %s to %s", weights, path)
    if path.is_file():
        metadata = read_onnx_metadata(path)
        problem = stale_source(metadata, path, weights)
        if problem is None and metadata.precision != precision:
            problem = f"{path} is a {metadata.precision} model, not the {precision} export"
        if problem is None:
            return path
        if not replace_stale:
            raise ExportError(f"{problem}; re-export it first: {export_command(weights, precision, path)} --force")
        log.info("%s: re-exporting", problem)
    else:
        log.info("%s missing: exporting %s to it first", path, weights)
    return _export(weights, precision, path, verify_shapes)


def _export(weights: Path, precision: str, path: Path, verify_shapes) -> Path:
    from banet.checkpoint import load_checkpoint
    from export.onnx_export import ExportOptions, export_onnx

    loaded = load_checkpoint(weights)
    options = ExportOptions(precision=precision, force=True)
    if verify_shapes is not None:
        options.verify_shapes = list(verify_shapes)
    export_onnx(loaded.model, path, options, loaded.sha256, weights.name, loaded.config)
    return path
