"""Where artifacts go (banet/artifacts.py): one engines folder whatever the current folder, and variant names that
never collide with the default files."""

from __future__ import annotations

from pathlib import Path

from banet import artifacts

ROOT = Path(__file__).resolve().parents[2]


def test_engines_folder_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run from another folder
    monkeypatch.delenv(artifacts.ENV, raising=False)
    assert artifacts.checkout_root() == ROOT
    assert artifacts.engines_dir() == ROOT / "engines"  # the checkout's, not a new ./engines here
    assert "this checkout's" in artifacts.engines_rule()
    monkeypatch.setattr(artifacts, "checkout_root", lambda: None)  # an installed package
    assert artifacts.engines_dir() == Path("engines")
    assert str(tmp_path / "engines") in artifacts.engines_rule()
    monkeypatch.setenv(artifacts.ENV, str(tmp_path / "mine"))
    assert artifacts.engines_dir() == tmp_path / "mine" and "$BANET_ENGINES" in artifacts.engines_rule()
    assert not (tmp_path / "engines").exists()


def test_variant_names_differ_from_the_defaults(tmp_path):
    default = artifacts.onnx_path("m", folder=tmp_path)
    assert default.name == "m.onnx"
    assert artifacts.onnx_path("m", folder=tmp_path, simplified=True).name == "m_slim.onnx"
    assert artifacts.onnx_path("m", "fp16", (720, 1280), folder=tmp_path).name == "m_720x1280_b1_fp16.onnx"
    assert artifacts.int8_onnx_path(default, "trt").name == "m_int8_trt.onnx"
    assert artifacts.int8_onnx_path(default, "trt", "auto48db").name == "m_int8_trt_auto48db.onnx"
    # before: these were written under the default name, which build_trt, quantize and the runtime read
    assert artifacts.onnx_path("m", folder=tmp_path, batch=3).name == "m_b3.onnx"
    assert artifacts.onnx_path("m", folder=tmp_path, sizes=(8, 64)).name == "m_8-64px.onnx"
    assert artifacts.onnx_path("m", folder=tmp_path, exporter="dynamo").name == "m_dynamo.onnx"
    assert artifacts.onnx_path("m", "fp16", folder=tmp_path, folded=False).name == "m_unfolded_fp16.onnx"


def test_the_int8_files_of_an_export_leave_out_app_graphs_and_refused_files(tmp_path):
    """Before: the benchmark's ``<stem>_int8*.onnx`` also took the app graphs made from the INT8 files
    (``banet_default_int8_ort_app.onnx``) and listed them as skipped systems."""
    fp32 = artifacts.onnx_path("m", folder=tmp_path)
    ort, trt = artifacts.int8_onnx_path(fp32, "ort"), artifacts.int8_onnx_path(fp32, "trt", "keep-bam1")
    others = [artifacts.app_path(ort), artifacts.app_path(ort, "BGR"), artifacts.failed_path(ort),
              artifacts.app_path(fp32), tmp_path / "mm_int8_ort.onnx", artifacts.app_path(ort, suffix=".ort")]
    for path in [fp32, ort, trt, *others]:
        path.write_bytes(b"")
    assert artifacts.int8_onnx_files(fp32) == [ort, trt]
    assert [p.name for p in others[:2]] == ["m_int8_ort_app.onnx", "m_int8_ort_app_bgr.onnx"]


def test_int8_files_leave_out_a_killed_run_s_staging_file(tmp_path):
    """A quantization killed with SIGKILL left m_int8_ort.partial.onnx, which benchmarks.run timed as a system
    "onnxruntime int8 (ort.partial)" and listed for --only."""
    from banet.artifacts import int8_onnx_files

    for name in ("m.onnx", "m_int8_ort.onnx", "m_int8_ort.partial.onnx", "m_int8_trt.onnx.partial"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in int8_onnx_files(tmp_path / "m.onnx")] == ["m_int8_ort.onnx"]
