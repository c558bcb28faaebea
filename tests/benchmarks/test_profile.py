"""``python -m benchmarks.profile``: the tables of two files side by side, results written only when asked and never
replaced without --force, and files that are not network ONNX refused in one line before any run."""

from __future__ import annotations

import json

import pytest

from banet.machine import results_stem
from benchmarks import profile


@pytest.fixture(scope="module")
def tiny_files(tiny_fp32_and_int8):
    return tiny_fp32_and_int8


def test_two_files_side_by_side_and_written_only_when_asked(tiny_files, tmp_path, capsys):
    fp32, int8 = tiny_files
    argv = [str(fp32), str(int8), "--backend", "onnxruntime", "--size", "24x40", "--runs", "1", "--threads", "1",
            "--top", "3"]
    assert profile.main(argv) == 0
    table = capsys.readouterr().out
    assert "| `tiny.onnx` |" in table and "| `tiny_int8_ort.onnx` |" in table
    assert "`tiny_int8_ort.onnx` / first |" in table and "| de_layer1 |" in table
    assert "QLinearConv" in table  # the INT8 file's kernel table
    assert not list(tmp_path.iterdir())  # nothing written without --output

    out = tmp_path / "results"
    assert profile.main([*argv, "--output", str(out)]) == 0
    stem = results_stem("profile_onnxruntime")
    report = json.loads((out / f"{stem}.json").read_text())
    assert [p["file"] for p in report["profiles"]] == [str(fp32), str(int8)]
    assert all(p["shape"] == "1x3x24x40" and p["runs"] == 1 and p["by_block"] for p in report["profiles"])
    assert (out / f"{stem}.md").read_text().startswith("# Where the time goes: onnxruntime")
    capsys.readouterr()

    before = (out / f"{stem}.json").read_bytes()
    assert profile.main([*argv, "--output", str(out)]) == 1  # same machine and day: refused before any run
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert (out / f"{stem}.json").read_bytes() == before


def test_what_is_not_a_network_onnx_is_refused_before_any_run(tiny_files, tmp_path, capsys, monkeypatch):
    fp32, _ = tiny_files
    monkeypatch.setattr(profile, "default_files", lambda: pytest.fail("the default model must not be exported"))
    garbage = tmp_path / "engine.onnx"
    garbage.write_bytes(b"\x00not an onnx file" * 10)
    for argv, needle in [([str(tmp_path / "missing.onnx")], "missing.onnx"),
                         ([str(garbage)], "engine.onnx"),
                         ([str(fp32), str(fp32)], "named twice")]:
        assert profile.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and needle in err and "Traceback" not in err and err.count("\n") == 1


def test_an_app_graph_is_refused_with_what_to_profile_instead(tiny_files, tmp_path, capsys):
    import onnx

    from banet.metadata import APP_GRAPH_KEY

    model = onnx.load(str(tiny_files[0]))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, APP_GRAPH_KEY: "app"})
    app = tmp_path / "tiny_app.onnx"
    onnx.save(model, str(app))
    assert profile.main([str(app)]) == 1
    err = capsys.readouterr().err
    assert "cannot profile" in err and "app graph" in err and "network ONNX it was made from" in err


def test_with_no_files_the_default_models_shipped_files_are_profiled(capsys):
    assert profile.main(["--backend", "onnxruntime", "--size", "32x48", "--runs", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "| `banet_default.onnx` |" in table and "| `banet_default_int8_ort.onnx` |" in table
    assert [p.name for p in profile.default_files("openvino")] == ["banet_default.onnx", "banet_default_int8_ov.onnx"]
    assert "--bf16" in profile.build_parser().format_help()
    assert profile.main(["--backend", "onnxruntime", "--bf16"]) == 1
    assert "--bf16 is OpenVINO's bfloat16 arithmetic" in capsys.readouterr().err
