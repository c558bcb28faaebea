"""benchmarks.tile_widths: each CPU path timed at its shapes, per-megapixel ratios, refusals before any work."""

import pytest

from benchmarks import tile_widths


def test_one_path_is_timed_at_every_shape_and_tabled_per_megapixel():
    row = tile_widths.measure("onnxruntime", "fp32", [(32, 48), (32, 64)], threads=1, repeats=2)
    assert set(row["p50_ms"]) == {"32x48", "32x64"} and all(ms > 0 for ms in row["p50_ms"].values())
    assert row["ms_per_mp"]["32x64"] == pytest.approx(row["p50_ms"]["32x64"] / (32 * 64 / 1e6), abs=0.1)
    assert "onnxruntime" in row["runs"]
    made = {"backend": "openvino", "precision": "int8", "runs": "openvino CPU (int8)", "threads": 2,
            "p50_ms": {"100x100": 10.0, "100x200": 10.0}, "ms_per_mp": {"100x100": 1000.0, "100x200": 500.0}}
    lines = tile_widths.table([made, {"backend": "openvino", "precision": "bf16", "skipped": "no bf16 units"}])
    assert lines[2] == "| openvino int8 | openvino CPU (int8) | 100x100 | 10.0 | 1,000.0 | 1.00x |"
    assert lines[3] == "| openvino int8 | openvino CPU (int8) | 100x200 | 10.0 | 500.0 | 2.00x |"  # half the time
    assert lines[4] == "| openvino bf16 | skipped: no bf16 units | | | | |"


@pytest.mark.parametrize("argv, needle", [(["--shapes", "33x64"], "even"), (["--repeats", "0"], "at least 1")])
def test_nonsense_is_refused_by_the_parser(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        tile_widths.build_parser().parse_args(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_an_existing_results_file_is_kept_unless_forced(tmp_path, capsys, monkeypatch):
    from banet.machine import results_stem

    kept = tmp_path / f"{results_stem('tile_widths')}.md"
    kept.write_text("committed")
    monkeypatch.setattr(tile_widths, "measure", lambda *a, **k: pytest.fail("ran before refusing"))
    assert tile_widths.main(["--output", str(tmp_path)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err and kept.read_text() == "committed"
