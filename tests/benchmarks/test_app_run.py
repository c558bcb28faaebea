"""benchmarks.app_run (an app graph run as an app runs it) and end_to_end --app: real runs on tiny graphs, refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from banet.config import BANetConfig
from banet.conventions import BANET
from banet.metadata import ModelMetadata
from benchmarks import app_run, end_to_end
from export.app_graph import wrap_for_apps


def _app(path, op: str = "Identity"):
    """An app graph around a one-node stand-in network (Identity: the photo comes back unchanged; Sqrt: NaN)."""
    graph = helper.make_graph([helper.make_node(op, ["input"], ["output"])], "n",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 3, "h", "w"])])
    metadata = ModelMetadata(conventions=BANET, config=BANetConfig(num_bams=2, dim_1=8, dim_2=16), precision="fp32",
                             source_sha256="0" * 64, source_name="n", exporter="test", opset=17, min_size=8)
    onnx.save(wrap_for_apps(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), metadata,
                            tile=16, overlap=4), str(path))
    return path


def _photo(path, size=(37, 23)):
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def test_app_run_deblurs_a_photo_with_onnxruntime_alone(tmp_path):
    rgb = _photo(tmp_path / "p.png")
    assert app_run.main([str(_app(tmp_path / "a.onnx")), str(tmp_path / "p.png"), str(tmp_path / "o.png"),
                         "--threads", "1"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgb)  # identity network, 4 tiles


def test_app_run_refuses_overflow_and_missing_files(tmp_path, capsys):
    _photo(tmp_path / "p.png")
    assert app_run.main([str(_app(tmp_path / "nan.onnx", "Sqrt")), str(tmp_path / "p.png"),
                         str(tmp_path / "o.png")]) == 1
    assert "overflowed" in capsys.readouterr().err and not (tmp_path / "o.png").exists()
    assert app_run.main([str(tmp_path / "none.onnx"), str(tmp_path / "p.png"), str(tmp_path / "o.png")]) == 1
    assert "make it with python export/to_app.py" in capsys.readouterr().err


def test_end_to_end_runs_an_app_case_in_a_fresh_process(tmp_path, monkeypatch):
    app = _app(tmp_path / "banet_default_app.onnx")
    monkeypatch.setattr(end_to_end, "app_file", lambda precision: app)
    _photo(tmp_path / "p.png")
    row = end_to_end.run_case(tmp_path / "p.png", "app", "fp32", 1, tmp_path)
    assert row["exit"] == 0 and "error" not in row, row
    assert row["command"].startswith("python -m benchmarks.app_run") and row["peak_rss_mb"] > 0
    assert np.asarray(Image.open(tmp_path / "app_fp32.png")).shape == (37, 23, 3)


def test_end_to_end_app_refuses_missing_app_graphs_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(end_to_end, "end_to_end", lambda *a, **k: pytest.fail("ran before refusing"))
    assert end_to_end.main(["16x16", "--app", "--output", str(tmp_path / "res")]) == 1
    err = capsys.readouterr().err
    assert "make them with python export/to_app.py" in err and "Traceback" not in err


def test_app_run_never_writes_over_its_inputs_or_an_existing_output(tmp_path, capsys):
    """Before: ``app_run APP p.png p.png`` replaced the photo with the network's output (exit 0), and an existing
    output was replaced without --force."""
    rgb = _photo(tmp_path / "p.png")
    app = _app(tmp_path / "a.onnx")
    photo_bytes, app_bytes = (tmp_path / "p.png").read_bytes(), app.read_bytes()
    for output in ("p.png", "a.onnx"):
        assert app_run.main([str(app), str(tmp_path / "p.png"), str(tmp_path / output), "--force"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "refused even with --force" in err and "Traceback" not in err, err
    assert (tmp_path / "p.png").read_bytes() == photo_bytes and app.read_bytes() == app_bytes
    (tmp_path / "o.png").write_bytes(b"earlier result")
    assert app_run.main([str(app), str(tmp_path / "p.png"), str(tmp_path / "o.png")]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "o.png").read_bytes() == b"earlier result"
    assert app_run.main([str(app), str(tmp_path / "p.png"), str(tmp_path / "o.png"), "--force"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgb)


def test_app_run_names_a_photo_it_cannot_read_and_refuses_nonsense_threads(tmp_path, capsys):
    """Before: a non-image photo was PIL's traceback, and ``--threads 100000`` hung creating threads."""
    (tmp_path / "bad.png").write_bytes(b"not an image")
    app = _app(tmp_path / "a.onnx")
    assert app_run.main([str(app), str(tmp_path / "bad.png"), str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "bad.png: cannot read it as a photo" in err and not (tmp_path / "o.png").exists()
    _photo(tmp_path / "p.png")
    assert app_run.main([str(app), str(tmp_path / "p.png"), str(tmp_path / "o.onnx")]) == 1
    assert "not an image format" in capsys.readouterr().err
    for threads in ("-3", "100000"):
        with pytest.raises(SystemExit) as exit_info:
            app_run.main([str(app), str(tmp_path / "p.png"), str(tmp_path / "o.png"), "--threads", threads])
        assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err
