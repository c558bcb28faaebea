"""OpenVINO's compiled shapes kept on disk for the next process (runtime.backends.openvino_backend: compile_cache):
read back for the same model and shape, off when asked, skipped when the folder cannot be written, trimmed."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is an extra: pip install '.[openvino]'")

from runtime.backends.openvino_backend import OpenVinoBackend, trim_compile_cache  # noqa: E402

X = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 48, 64)).astype(np.float32)


def _run(path, **options):
    """(output, whether the compiled shape was read from the cache, the backend's cache folder)."""
    backend = OpenVinoBackend(path, threads=1, **options)
    try:
        out = backend.run(X)
        compiled, _ = backend._requests.entries()[0]
        return out, bool(compiled.get_property("LOADED_FROM_CACHE")), backend.compile_cache
    finally:
        backend.close()


def test_a_later_backend_reads_the_compiled_shape_back(onnx_path, tmp_path):
    first, cached_first, folder = _run(onnx_path, compile_cache=tmp_path / "ov")
    second, cached_second, _ = _run(onnx_path, compile_cache=tmp_path / "ov")
    assert folder == tmp_path / "ov" and any(folder.iterdir())
    assert (cached_first, cached_second) == (False, True)
    assert np.array_equal(first, second)


def test_auto_is_the_cache_folder_and_none_turns_it_off(onnx_path, tmp_path, monkeypatch):
    monkeypatch.setenv("BANET_CACHE", str(tmp_path / "cache"))
    _, _, folder = _run(onnx_path)
    assert folder == tmp_path / "cache" / "openvino" and any(folder.iterdir())
    _, cached, off = _run(onnx_path, compile_cache=None)
    assert off is None and cached is False


def test_a_folder_that_cannot_be_written_only_costs_the_compile(onnx_path, tmp_path, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.INFO, logger="runtime.backends.openvino_backend"):
        out, cached, folder = _run(onnx_path, compile_cache=blocker / "ov")
    assert folder is None and cached is False and out.shape == X.shape
    assert "compile cache off" in caplog.text


def test_trimming_drops_the_oldest_entries_first(tmp_path):
    for age, name in enumerate(["111", "222", "333"]):  # newest, middle, oldest: OpenVINO names them <hash>.blob
        path = tmp_path / f"{name}.blob"
        path.write_bytes(b"x" * 100)
        os.utime(path, ns=(10**18 - age * 10**12, 10**18 - age * 10**12))
    trim_compile_cache(tmp_path, 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["111.blob", "222.blob"]
    trim_compile_cache(tmp_path, 10**6)
    assert len(list(tmp_path.iterdir())) == 2
