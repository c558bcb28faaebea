"""The cache of checkpoint exports (``Deblurrer(checkpoint, backend="onnxruntime")``) keeps its recent entries only."""

import os

from export import checkpoint_onnx
from export.checkpoint_onnx import KEEP, _keep_recent


def test_the_checkpoint_export_cache_keeps_its_most_recent_entries(tmp_path):
    """Round 17: each version of a checkpoint left a whole model in the cache (7.4 MB for the default model, about
    72 MB for the paper's network), forever."""
    entries = []
    for i in range(KEEP + 4):
        entry = tmp_path / f"best-{i:016x}.onnx"
        entry.write_bytes(b"model")
        os.utime(entry, ns=(i * 10**9, i * 10**9))
        entries.append(entry)
    (tmp_path / "mine.onnx").write_bytes(b"the user's file")  # not an entry of the cache: never removed
    (tmp_path / "best-0000000000000001.onnx.lock").write_bytes(b"123")  # another run writing it now: kept
    used = entries[0]  # the oldest, used now: kept
    _keep_recent(used)
    left = sorted(p.name for p in tmp_path.glob("best-*.onnx"))
    assert used.name in left and entries[1].name in left
    assert left == sorted([used.name, entries[1].name] + [e.name for e in entries[-(KEEP - 1):]])
    assert (tmp_path / "mine.onnx").read_bytes() == b"the user's file"
    assert checkpoint_onnx._ENTRY.fullmatch(used.name)
