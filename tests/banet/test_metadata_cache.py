"""A model file's metadata is parsed once per version of the file (banet.metadata.read_onnx_metadata).

Choosing and opening a model read the same files' metadata several times (seven parses of two files for
``Deblurrer(precision="int8")`` on OpenVINO, ~5 ms each). A file rewritten, even to the same size, is read again,
and what a caller does to the returned metadata does not reach the next reader.
"""

from __future__ import annotations

import os
import shutil

import onnx
import pytest

import banet.metadata as metadata_module
from banet.artifacts import int8_onnx_path
from banet.defaults import DEFAULT_ONNX
from banet.metadata import read_onnx_metadata


@pytest.fixture
def parses(monkeypatch):
    """The names summarize_onnx was asked to parse."""
    seen: list[str] = []
    real = metadata_module.summarize_onnx

    def counting(data, name):
        seen.append(name)
        return real(data, name)

    monkeypatch.setattr(metadata_module, "summarize_onnx", counting)
    return seen


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model_int8.onnx"
    shutil.copyfile(int8_onnx_path(DEFAULT_ONNX, "ort"), path)
    return path


def _set_source_name(path, value: str) -> None:
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "banet.source_name":
            prop.value = value
    onnx.save(proto, str(path))


def test_the_same_file_is_parsed_once(model, parses):
    first, second = read_onnx_metadata(model), read_onnx_metadata(str(model))
    assert first == second and parses == [str(model)]


def test_a_rewritten_file_is_read_again_even_at_the_same_size(model, parses):
    before = read_onnx_metadata(model)
    old = model.stat()
    _set_source_name(model, before.source_name[::-1])  # same length, so the same size
    os.utime(model, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the old modification time (as `cp -p` leaves)
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    after = read_onnx_metadata(model)
    assert after.source_name == before.source_name[::-1] and len(parses) == 2


def test_what_a_caller_changes_does_not_reach_the_next_reader(model):
    read_onnx_metadata(model).extra["int8_flavour"] = "changed"
    assert read_onnx_metadata(model).extra["int8_flavour"] == "ort"


def test_a_missing_file_is_still_refused_after_it_was_read(model):
    read_onnx_metadata(model)
    model.unlink()
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        read_onnx_metadata(model)
