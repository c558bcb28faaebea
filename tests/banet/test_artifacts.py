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
