"""``export.artifact_chain.exported_onnx``: a default ONNX an older exporter wrote is not used as current.

Before the graph revision was recorded, an ``engines/`` export from before the integer strip-pooling index was
quantized, built and measured as if current. Now it is refused with the command that re-exports it, replaced
where asked (``--force``), and the runtime's own cache of checkpoint exports replaces it by itself.
"""

from __future__ import annotations

import pytest

from banet.metadata import GRAPH_REVISION, read_onnx_metadata
from tests.older_exports import as_older_export

pytest.importorskip("onnx", reason="exporting needs pip install '.[export]'")


def test_an_older_default_export_is_refused_then_replaced_when_asked(tiny_weights):
    from export.artifact_chain import exported_onnx
    from export.onnx_export import ExportError

    path = exported_onnx(tiny_weights)
    as_older_export(path, path)
    with pytest.raises(ExportError) as info:
        exported_onnx(tiny_weights)
    message = str(info.value)
    assert "older banet-deploy (graph revision 1" in message and "export/to_onnx.py" in message, message
    assert message.rstrip().endswith("--force") and "\n" not in message
    assert read_onnx_metadata(path).graph_revision == 1  # refused: the file is left as it was
    assert exported_onnx(tiny_weights, replace_stale=True) == path
    assert read_onnx_metadata(path).graph_revision == GRAPH_REVISION


def test_the_cache_of_checkpoint_exports_replaces_an_older_one_itself(tiny_weights, tmp_path, monkeypatch):
    from export.checkpoint_onnx import onnx_for_checkpoint

    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))
    path = onnx_for_checkpoint(tiny_weights)
    as_older_export(path, path)
    assert onnx_for_checkpoint(tiny_weights) == path
    assert read_onnx_metadata(path).graph_revision == GRAPH_REVISION
