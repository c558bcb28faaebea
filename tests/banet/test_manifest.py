"""Engine manifests: writing, reading, and the compatibility check the runtime applies (no TensorRT needed)."""

import json
import os
import re

import pytest

from banet.manifest import (
    EngineManifest,
    ManifestError,
    RuntimeEnvironment,
    commit_pair,
    explain,
    incompatibilities,
    manifest_path,
    read_manifest,
    settle_pair,
    stage_pair,
    target_to_cc,
)
from tests.manifest_helpers import make_manifest

RTX3090 = RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA GeForce RTX 3090", (8, 6))


def test_round_trip_and_engine_check(tmp_path):
    engine = tmp_path / "tiny_fp16.engine"
    engine.write_bytes(b"engine")
    manifest = make_manifest()
    manifest.write(manifest_path(engine))
    assert manifest_path(engine) == tmp_path / "tiny_fp16.json"
    back = read_manifest(engine)
    assert back.to_dict() == manifest.to_dict()
    assert back.profile.max == (2, 3, 512, 512)
    metadata = back.model_metadata()
    assert metadata.precision == "fp16" and metadata.config.num_bams == 2  # engine precision, ONNX's network

    engine.write_bytes(b"another engine")  # replaced engine: the manifest no longer describes it
    with pytest.raises(ManifestError, match="does not describe"):
        read_manifest(engine)


def test_missing_or_foreign_manifest(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(ManifestError, match="no manifest .*build_trt.py"):
        read_manifest(engine)
    manifest_path(engine).write_text(json.dumps({"schema": 1, "engine": "x.engine"}))
    with pytest.raises(ManifestError, match="lacks"):
        read_manifest(engine)
    manifest_path(engine).write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        read_manifest(engine)


def test_same_machine_is_compatible():
    assert incompatibilities(make_manifest(), RTX3090) == []


@pytest.mark.parametrize("env, message", [
    (RuntimeEnvironment("tensorrt", "10.9.0.34", "NVIDIA GeForce RTX 3090", (8, 6)),
     "built with TensorRT 10.8.0.43 and this machine has TensorRT 10.9.0.34"),
    (RuntimeEnvironment("tensorrt-rtx", "1.7.1.116", "NVIDIA GeForce RTX 3090", (8, 6)),
     "built with TensorRT 10.8.0.43 but this machine would run it with TensorRT for RTX"),
    (RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA H100 80GB HBM3", (9, 0)),
     r"built on NVIDIA GeForce RTX 3090 \(compute capability 8.6\) and NVIDIA H100 .*9.0"),
    (RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA RTX A6000", (8, 6)),
     "tuned for the exact GPU model"),
])
def test_mismatches_are_named(env, message):
    problems = incompatibilities(make_manifest(), env)
    assert len(problems) == 1
    assert __import__("re").search(message, problems[0]), problems[0]
    text = explain("engines/tiny_fp16.engine", make_manifest(), problems)
    assert "cannot run here" in text and "python export/build_trt.py --fp16 --runtime tensorrt --force" in text


def test_version_compatible_engines_run_on_later_releases_only():
    manifest = make_manifest(version_compatible=True)
    later = RuntimeEnvironment("tensorrt", "11.4.0.1", "NVIDIA GeForce RTX 3090", (8, 6))
    older = RuntimeEnvironment("tensorrt", "10.3.0.26", "NVIDIA GeForce RTX 3090", (8, 6))
    too_new = RuntimeEnvironment("tensorrt", "12.0.0", "NVIDIA GeForce RTX 3090", (8, 6))
    assert incompatibilities(manifest, later) == []
    assert "version-compatible" in incompatibilities(manifest, older)[0]
    assert incompatibilities(manifest, too_new)


def test_hardware_compatible_engines():
    ampere = make_manifest(hardware_compatibility="ampere_plus")
    assert incompatibilities(ampere, RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA H100", (9, 0))) == []
    assert "older" in incompatibilities(ampere, RuntimeEnvironment("tensorrt", "10.8.0.43", "Tesla T4", (7, 5)))[0]
    same = make_manifest(hardware_compatibility="same_compute_capability")
    assert incompatibilities(same, RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA RTX A6000", (8, 6))) == []
    assert incompatibilities(same, RuntimeEnvironment("tensorrt", "10.8.0.43", "NVIDIA L4", (8, 9)))


def test_rtx_targets():
    sm75 = make_manifest(runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None, targets=["sm75"])
    rtx = "tensorrt-rtx", "1.7.1.116"
    assert incompatibilities(sm75, RuntimeEnvironment(*rtx, "NVIDIA GeForce RTX 2080 Ti", (7, 5))) == []
    problem = incompatibilities(sm75, RuntimeEnvironment(*rtx, "NVIDIA GeForce RTX 3090", (8, 6)))[0]
    assert "targets sm75" in problem and "--target sm86" in problem
    default = make_manifest(runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None, targets=[])
    assert incompatibilities(default, RuntimeEnvironment(*rtx, "NVIDIA GeForce RTX 4090", (8, 9))) == []
    assert incompatibilities(default, RuntimeEnvironment(*rtx, "NVIDIA GeForce RTX 5090", (12, 0))) == []
    turing = incompatibilities(default, RuntimeEnvironment(*rtx, "NVIDIA GeForce RTX 2080 Ti", (7, 5)))[0]
    assert "--target sm75" in turing
    h100 = incompatibilities(default, RuntimeEnvironment(*rtx, "NVIDIA H100 80GB HBM3", (9, 0)))[0]
    assert "datacenter GPUs use TensorRT" in h100
    newer = incompatibilities(default, RuntimeEnvironment("tensorrt-rtx", "1.8.0.1", "RTX 4090", (8, 9)))[0]
    assert "exact release" in newer


def test_stale_onnx_is_refused():
    manifest = make_manifest()
    assert incompatibilities(manifest, RTX3090, current_onnx_sha256="cd" * 32) == []
    problem = incompatibilities(manifest, RTX3090, current_onnx_sha256="ef" * 32)[0]
    assert "has changed" in problem and "stale" in problem


def test_target_parsing():
    assert target_to_cc("sm75") == (7, 5)
    assert target_to_cc("sm120") == (12, 0)
    with pytest.raises(ValueError):
        target_to_cc("turing")


# -- replacing an engine and its manifest together -----------------------------------------------------------------
def committed_pair(folder, data=b"old engine"):
    engine = folder / "x.engine"
    engine.write_bytes(data)
    make_manifest(data, engine="x.engine").write(manifest_path(engine))
    return engine


def test_staged_pair_is_invisible_until_committed(tmp_path):
    engine = committed_pair(tmp_path)
    new = make_manifest(b"new engine", engine="x.engine")
    staged = stage_pair(engine, b"new engine", new)
    assert staged == tmp_path / "x.partial.engine" and manifest_path(staged).is_file()
    assert read_manifest(engine).engine_sha256 == make_manifest(b"old engine").engine_sha256
    commit_pair(engine)
    assert read_manifest(engine).engine_sha256 == new.engine_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine", "x.json"]


@pytest.mark.parametrize("first_build", [False, True])
def test_a_commit_cut_between_its_renames_reads_as_the_new_pair_and_is_settled(tmp_path, first_build):
    engine = tmp_path / "x.engine" if first_build else committed_pair(tmp_path)
    new = make_manifest(b"new engine", engine="x.engine")
    staged = stage_pair(engine, b"new engine", new)
    os.replace(staged, engine)  # the commit point; the manifest rename never happens
    assert read_manifest(engine).engine_sha256 == new.engine_sha256  # the staged manifest describes it
    assert settle_pair(engine) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine", "x.json"]
    assert read_manifest(engine).engine_sha256 == new.engine_sha256


def test_settling_an_uncommitted_stage_keeps_the_old_pair(tmp_path):
    engine = committed_pair(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    stage_pair(engine, b"new engine", make_manifest(b"new engine", engine="x.engine"))
    (tmp_path / "x.engine.partial").write_bytes(b"left by an older build")
    assert settle_pair(engine) is False
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_staged_manifest_of_other_bytes_is_never_taken(tmp_path):
    engine = committed_pair(tmp_path)
    stage_pair(engine, b"new engine", make_manifest(b"new engine", engine="x.engine"))
    engine.write_bytes(b"replaced by hand")
    with pytest.raises(ManifestError, match="does not describe"):
        read_manifest(engine)


def test_missing_engine_is_named(tmp_path):
    with pytest.raises(ManifestError, match="x.engine: engine file not found"):
        read_manifest(tmp_path / "x.engine")


@pytest.mark.parametrize("field, value, named", [
    ("engine_bytes", "6", "engine_bytes (str, expected int)"),
    ("engine_bytes", True, "engine_bytes (bool, expected int)"),
    ("profiles", {"input": "input"}, "profiles (dict, expected list)"),
    ("profiles", [], "profiles (expected a non-empty list of objects)"),
    ("gpu", "RTX 3090", "gpu (str, expected dict)"),
    ("targets", "sm75", "targets (str, expected list)"),
])
def test_a_field_of_the_wrong_type_is_one_manifest_error(field, value, named):
    """Hand-edited or foreign manifests fail when read, naming the field, never deep inside the runtime."""
    data = make_manifest().to_dict()
    data[field] = value
    with pytest.raises(ManifestError, match="malformed manifest: .*" + re.escape(named)):
        EngineManifest.from_dict(data, "x.json")
    assert EngineManifest.from_dict(make_manifest().to_dict(), "x.json").engine_bytes == 6


def test_build_lock_is_exclusive_and_leaves_nothing_behind(tmp_path):
    from banet.manifest import EngineBusyError, build_lock
    from banet.outputs import lock_path

    engine = tmp_path / "x.engine"
    with build_lock(engine):
        assert lock_path(engine).read_text() == str(os.getpid())
        with pytest.raises(EngineBusyError, match=rf"another build of .*x.engine is running \(pid {os.getpid()}\)"):
            with build_lock(engine):
                pass
        with build_lock(tmp_path / "y.engine"):  # other engines are not held up
            pass
    assert list(tmp_path.iterdir()) == []
    with build_lock(engine):  # released: it can be taken again
        pass
