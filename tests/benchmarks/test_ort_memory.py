"""python -m benchmarks.ort_memory: every memory option of ONNX Runtime measured in a fresh process, the runtime's own
among them, and its results files refused before any work when they exist."""

import json

import pytest

from benchmarks.ort_memory import MODES, main

pytest.importorskip("onnxruntime")


def test_every_option_is_measured_for_one_session_and_for_per_shape_sessions(one_bam_onnx, tmp_path, capsys):
    assert main([str(one_bam_onnx), "--sizes", "32x48", "--per-shape", "32x48", "40x56", "--threads", "1",
                 "--runs", "1", "--output", str(tmp_path)]) == 0
    [report] = tmp_path.glob("ort_memory_*.json")
    cases = json.loads(report.read_text())["cases"]
    assert [(c["mode"], c["size"], c["sessions"]) for c in cases] == (
        [(mode, "32x48", 1) for mode in MODES] + [(mode, "32x48 40x56", 2) for mode in MODES])
    assert all(c["p50_ms"] > 0 and c["peak_rss_mb"] > 0 and c["page_faults_per_call"] >= 0 for c in cases)
    table = report.with_suffix(".md").read_text()
    assert "| shared arena, no pattern |" in table and "(2, one per shape)" in table
    # a second run on the same day is refused before any work (the files stay as they are) unless --force
    before = report.read_text()
    capsys.readouterr()
    assert main([str(one_bam_onnx), "--sizes", "32x48", "--runs", "1", "--output", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err and report.read_text() == before


def test_a_file_that_is_no_network_onnx_is_refused_in_one_line(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    assert main([str(bad), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
