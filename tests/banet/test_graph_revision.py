"""A graph an older exporter wrote is told apart from a current one (``banet.metadata.GRAPH_REVISION``).

Before: nothing recorded which exporter's arithmetic a file holds. Files exported before the integer strip-pooling
index keep a float32 index that OpenVINO's dynamic-shape compilation rounds differently (strips moved: 77 dB at
246x98); tools took them as current. Now such a file reads as revision 1 and is stale wherever staleness is asked.
"""

from __future__ import annotations

import pytest

from banet.errors import ArtifactError
from banet.metadata import GRAPH_REVISION, ModelMetadata, outdated_graph, read_onnx_metadata, stale_source
from tests.manifest_helpers import make_manifest
from tests.older_exports import REVISION_KEY, as_older_export

CURRENT = make_manifest().metadata


def test_metadata_records_the_current_revision_and_reads_it_back():
    assert CURRENT[REVISION_KEY] == str(GRAPH_REVISION) and GRAPH_REVISION >= 2
    metadata = ModelMetadata.from_props(CURRENT, "x.onnx")
    assert metadata.graph_revision == GRAPH_REVISION and REVISION_KEY[len("banet."):] not in metadata.extra
    assert outdated_graph(metadata, "x.onnx") is None and stale_source(metadata, "x.onnx", None) is None


def test_a_file_without_a_revision_is_revision_1_and_stale_even_without_its_weights():
    older = {k: v for k, v in CURRENT.items() if k != REVISION_KEY}
    metadata = ModelMetadata.from_props(older, "engines/old.onnx")
    assert metadata.graph_revision == 1
    problem = stale_source(metadata, "engines/old.onnx", None)
    assert problem is not None and problem.startswith("engines/old.onnx was exported by an older banet-deploy")
    assert f"graph revision 1, current {GRAPH_REVISION}" in problem and "OpenVINO" in problem and "\n" not in problem


def test_a_revision_that_does_not_parse_names_its_key():
    with pytest.raises(ArtifactError, match=r"x.onnx: metadata banet.graph_revision: not a whole number \('two'\)"):
        ModelMetadata.from_props({**CURRENT, REVISION_KEY: "two"}, "x.onnx")


def test_an_export_records_the_current_revision_and_an_older_copy_reads_as_stale(tiny_weights, tmp_path):
    pytest.importorskip("onnx", reason="exporting needs pip install '.[export]'")
    from export.checkpoint_onnx import onnx_for_checkpoint

    exported = onnx_for_checkpoint(tiny_weights)
    assert read_onnx_metadata(exported).graph_revision == GRAPH_REVISION
    assert stale_source(read_onnx_metadata(exported), exported, tiny_weights) is None
    older = as_older_export(exported, tmp_path / "older.onnx")
    metadata = read_onnx_metadata(older)
    assert metadata.graph_revision == 1 and "older banet-deploy" in stale_source(metadata, older, tiny_weights)
