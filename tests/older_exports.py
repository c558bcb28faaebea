"""An ONNX file as an older banet-deploy wrote it: the same graph without ``banet.graph_revision`` (revision 1)."""

from pathlib import Path

REVISION_KEY = "banet.graph_revision"


def as_older_export(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` with its graph revision key removed, as exports before 2026-12-05 are."""
    import onnx

    model = onnx.load(str(source))
    kept = [entry for entry in model.metadata_props if entry.key != REVISION_KEY]
    assert len(kept) == len(model.metadata_props) - 1, f"{source} records no {REVISION_KEY}"
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(target))
    return target
