"""Run a checkpoint on ONNX Runtime or OpenVINO: export it (verified against PyTorch) once into the cache, then open
the ONNX. This is the exporter's job, not the runtime's; it plugs into ``Deblurrer(checkpoint,
backend="onnxruntime")`` (or ``"openvino"``) through the entry point group ``banet_deploy.checkpoint_backends``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from banet.hashing import file_sha256
from banet.outputs import lock_path
from banet.paths import cache_dir
from export.artifact_chain import exported_onnx
from runtime.backends.base import Backend

log = logging.getLogger(__name__)

#: Shapes the on-the-fly export is verified on (odd sizes and a batch of two).
VERIFY_SHAPES = [(1, 64, 64), (2, 38, 50), (1, 30, 98)]


#: How many checkpoint exports the cache keeps (the most recently used): each is a whole model (7.4 MB for the
#: default, about 72 MB for the paper's network), one per version of every checkpoint run, which grew without end.
KEEP = 8
#: ``<stem>-<16 hex digits of its sha256>.onnx``: the cache's own entries, the only files it removes.
_ENTRY = re.compile(r".+-[0-9a-f]{16}\.onnx")


def onnx_for_checkpoint(weights: Path) -> Path:
    """Export ``weights`` to ONNX once (verified by the exporter) and reuse it, keyed by the file's sha256. The
    cache is ours: one an older exporter wrote (:func:`banet.metadata.outdated_graph`) is exported again; past
    :data:`KEEP` entries the least recently used are removed."""
    weights = Path(weights)
    target = cache_dir() / f"{weights.stem}-{file_sha256(weights)[:16]}.onnx"
    # another run exporting the same checkpoint right now (parallel jobs over several folders): exported_onnx waits
    # for its file, which is then reused
    path = exported_onnx(weights, "fp32", target, replace_stale=True, verify_shapes=VERIFY_SHAPES)
    _keep_recent(path)
    return path


def _keep_recent(used: Path) -> None:
    """Mark ``used`` as just used and remove the cache's entries past :data:`KEEP`, oldest use first; never one
    another run is writing (its lock file is there). A cache that cannot be trimmed is only logged."""
    try:
        used.touch()
        entries = [p for p in used.parent.iterdir() if _ENTRY.fullmatch(p.name) and p.is_file()]
        entries.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            if old != used and not lock_path(old).exists():
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.info("could not trim the checkpoint export cache %s (%s)", used.parent, exc)


def open_checkpoint_on_onnxruntime(weights: str | Path, **options) -> Backend:
    """The checkpoint's cached ONNX export on ONNX Runtime (``options`` as for ``OnnxRuntimeBackend``)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(onnx_for_checkpoint(Path(weights)), **options)


def open_checkpoint_on_openvino(weights: str | Path, **options) -> Backend:
    """The checkpoint's cached ONNX export on OpenVINO (``options`` as for ``OpenVinoBackend``)."""
    from runtime.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(onnx_for_checkpoint(Path(weights)), **options)
