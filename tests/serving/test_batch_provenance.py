"""python -m serving.batch remembers which input made each output: a rerun skips an output as done only when the
job record says it came from the same input, unchanged. Another input's output under the same name (two camera
cards' IMG_0001.png into one DST), an edited input's stale output and an output the record does not name are
refused for that file (one line naming it and the remedy, exit 1, the output untouched); an interrupted job, even
one killed before it could confirm its outputs, resumes; an older job record without inputs is refused as a
whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtime.images import write_image

pytest.importorskip("ray.data", reason="serving.batch runs on Ray Data: pip install '.[batch]'")

import serving.batch as batch  # noqa: E402
import tests.serving.test_batch as base  # noqa: E402
from serving.batch import JOB_NAME, RESULTS_NAME, main  # noqa: E402
from tests.serving.test_batch import _batch, _image, _results  # noqa: E402

tiny_onnx = base.tiny_onnx  # the fixture: a small seeded network as ONNX

REMEDY = "choose another DST, or remove it (or pass --force, which redoes every file) to replace it"


def _photos(folder: Path, names: dict[str, int]) -> Path:
    """Photos ``name`` -> seed (different seeds: different photos) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in names.items():
        write_image(folder / name, _image(40, 56, seed))
    return folder


def _fake_ray(monkeypatch, fill: int | None = None, kill: dict | None = None) -> list:
    """Replace the Ray part of a job by workers that write each output as the real ones do (whole, renamed into
    place), its bytes naming its input. After ``fill`` files (default all): with ``kill`` (a dict), the job is
    killed as by SIGKILL: ``kill["record"]`` holds DST's job record as it was then, which the caller puts back
    (the driver's closing writes never happen). Returns the file names each call was given."""
    from banet.outputs import write_atomic

    calls = []

    def fake(args, address, jobs, rows, todo, timing):
        calls.append([source.name for source, _ in jobs])
        for index, (source, target) in list(zip(todo, jobs))[:fill]:
            write_atomic(target, b"deblurred " + os.fsencode(source.resolve()))
            rows[index] = dict(file=str(source), output=str(target), status="ok", error="", seconds=0.1, frames=1,
                               worker="fake", started=1.0, finished=2.0)
        if kill is not None:
            kill["record"] = (args.output / JOB_NAME).read_bytes()
            raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(batch, "_deblur_on_ray", fake)
    return calls


def _killed(out: Path, kill: dict) -> None:
    """What SIGKILL leaves: the job record as it was when the job died."""
    (out / JOB_NAME).write_bytes(kill["record"])


def _state(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


def _refused_line(err: str, target: Path, needle: str) -> None:
    """One ``error:`` line for the refused file, naming it, the reason and the remedy."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{target} exists but" in lines[0] and needle in lines[0] and REMEDY in lines[0], lines[0]


def test_two_cards_same_name_second_refused_first_output_untouched(tmp_path, tiny_onnx, monkeypatch, capsys):
    """The audit's case, first job on real Ray: card2's IMG_0001.png is another photo than card1's."""
    card1 = _photos(tmp_path / "card1", {"IMG_0001.png": 1})
    card2 = _photos(tmp_path / "card2", {"IMG_0001.png": 2})
    lib = tmp_path / "lib"
    first = _batch(str(card1), str(lib), "--model", str(tiny_onnx), "--threads", "1", "--workers", "1")
    assert first.returncode == 0, first.stderr
    kept = _state(lib / "IMG_0001.png")

    second = _batch(str(card2), str(lib), "--model", str(tiny_onnx), "--threads", "1", "--workers", "1")
    # before: exit 0, "1 deblurred ... 1 already done", lib/IMG_0001.png (card1's) kept as card2's
    assert second.returncode == 1, second.stdout
    assert "1 file(s): 0 deblurred, 0 failed, 1 refused, 0 already done" in second.stdout, second.stdout
    _refused_line(second.stderr, lib / "IMG_0001.png", f"made from another input, {card1.resolve()}/IMG_0001.png")
    assert _state(lib / "IMG_0001.png") == kept
    row = _results(lib / RESULTS_NAME, card2)["IMG_0001.png"]
    assert row["status"] == "refused" and "made from another input" in row["error"], row
    record = json.loads((lib / JOB_NAME).read_text())
    assert record["outputs"]["IMG_0001.png"]["input"] == str((card1 / "IMG_0001.png").resolve()), record

    # The rest of card2 is still done; the refused file is never given to a worker.
    _photos(card2, {"IMG_0002.png": 3})
    calls = _fake_ray(monkeypatch)
    assert main([str(card2), str(lib), "--model", str(tiny_onnx), "-q"]) == 1
    assert calls == [["IMG_0002.png"]] and _state(lib / "IMG_0001.png") == kept
    capsys.readouterr()
    # The remedy: --force makes card2's the output, and the record says so.
    assert main([str(card2), str(lib), "--model", str(tiny_onnx), "--force", "-q"]) == 0
    assert (lib / "IMG_0001.png").read_bytes() == b"deblurred " + os.fsencode(card2.resolve() / "IMG_0001.png")
    record = json.loads((lib / JOB_NAME).read_text())["outputs"]
    assert record["IMG_0001.png"]["input"] == str(card2.resolve() / "IMG_0001.png"), record
    assert main([str(card2), str(lib), "--model", str(tiny_onnx), "-q"]) == 0 and len(calls) == 2


def test_an_edited_input_is_not_reported_done(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos", {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    stale = _state(out / "a.png")
    write_image(photos / "a.png", _image(40, 56, 7))  # the photo retouched after the job
    os.utime(photos / "a.png", ns=(stale[0] + 10**9, stale[0] + 10**9))  # later, whatever the clock's resolution
    capsys.readouterr()
    # before: exit 0, a.png "skipped, output exists (done by an earlier run)", its stale output kept as done
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1
    _refused_line(capsys.readouterr().err, out / "a.png", f"made from {photos / 'a.png'} before it changed")
    rows = _results(out / RESULTS_NAME, photos)
    assert rows["a.png"]["status"] == "refused" and rows["b.png"]["status"] == "skipped", rows
    assert _state(out / "a.png") == stale and len(calls) == 1
    # The remedy for that file alone: remove its output; the rerun deblurs it, the next one skips it.
    (out / "a.png").unlink()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and calls[-1] == ["a.png"]
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and len(calls) == 2


def test_an_unchanged_rerun_skips_as_done_and_the_record_names_each_input(tmp_path, tiny_onnx, monkeypatch,
                                                                         capsys):
    photos = _photos(tmp_path / "photos", {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    outputs = json.loads((out / JOB_NAME).read_text()).get("outputs")  # before: no outputs in the record
    assert outputs == {name: {"input": str((photos / name).resolve()), "size": (photos / name).stat().st_size,
                              "mtime_ns": (photos / name).stat().st_mtime_ns} for name in ("a.png", "b.png")}
    done = {name: _state(out / name) for name in ("a.png", "b.png")}
    capsys.readouterr()
    # The same files through another spelling of SRC (a link to the folder): the same inputs, so done.
    link = tmp_path / "link"
    link.symlink_to(photos)
    for source in (photos, link):
        assert main([str(source), str(out), "--model", str(tiny_onnx), "-q"]) == 0
        assert "0 deblurred, 0 failed, 0 refused, 2 already done" in capsys.readouterr().out
        assert {row["status"] for row in _results(out / RESULTS_NAME, source).values()} == {"skipped"}
    assert len(calls) == 1 and {name: _state(out / name) for name in done} == done


def test_an_interrupted_job_resumes_without_taking_another_inputs_output(tmp_path, tiny_onnx, monkeypatch,
                                                                          capsys):
    card1 = _photos(tmp_path / "card1", {"IMG_0001.png": 1})
    card2 = _photos(tmp_path / "card2", {"IMG_0001.png": 2, "IMG_0002.png": 3, "IMG_0003.png": 4,
                                         "IMG_0004.png": 5})
    lib = tmp_path / "lib"
    _fake_ray(monkeypatch)
    assert main([str(card1), str(lib), "--model", str(tiny_onnx), "-q"]) == 0
    theirs = _state(lib / "IMG_0001.png")
    # card2's job is killed (SIGKILL) once IMG_0002.png is written, before the driver heard of it.
    kill: dict = {}
    _fake_ray(monkeypatch, fill=1, kill=kill)
    assert main([str(card2), str(lib), "--model", str(tiny_onnx), "-q"]) == 130
    _killed(lib, kill)
    written = _state(lib / "IMG_0002.png")
    assert not (lib / "IMG_0003.png").exists()
    capsys.readouterr()

    calls = _fake_ray(monkeypatch)
    assert main([str(card2), str(lib), "--model", str(tiny_onnx), "-q"]) == 1  # IMG_0001.png is card1's
    rows = _results(lib / RESULTS_NAME, card2)
    # before: IMG_0001.png "skipped" (card1's photo taken for card2's), exit 0
    assert {name: row["status"] for name, row in rows.items()} == {
        "IMG_0001.png": "refused", "IMG_0002.png": "skipped", "IMG_0003.png": "ok", "IMG_0004.png": "ok"}, rows
    _refused_line(capsys.readouterr().err, lib / "IMG_0001.png", "made from another input")
    assert calls == [["IMG_0003.png", "IMG_0004.png"]]  # the killed job's finished file not redone
    assert _state(lib / "IMG_0001.png") == theirs and _state(lib / "IMG_0002.png") == written
    outputs = json.loads((lib / JOB_NAME).read_text())["outputs"]
    assert outputs["IMG_0001.png"]["input"] == str(card1.resolve() / "IMG_0001.png")
    assert all(outputs[f"IMG_000{i}.png"]["input"] == str(card2.resolve() / f"IMG_000{i}.png") for i in (2, 3, 4))
    assert not any("pending" in entry for entry in outputs.values()), outputs

    # A --force run killed half-way: the file it redid and the one it had not reached both resume as done.
    photos = _photos(tmp_path / "photos", {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    kill = {}
    _fake_ray(monkeypatch, fill=1, kill=kill)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--force", "-q"]) == 130
    _killed(out, kill)
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and not calls
    assert {row["status"] for row in _results(out / RESULTS_NAME, photos).values()} == {"skipped"}


def test_outputs_the_record_does_not_name_are_refused(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos", {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    calls = _fake_ray(monkeypatch)
    assert main([str(photos.joinpath("a.png")), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    (out / "b.png").write_bytes(b"copied in by hand")  # a DST with a record, and a file no job made
    capsys.readouterr()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1  # before: b.png skipped, exit 0
    _refused_line(capsys.readouterr().err, out / "b.png", f"{JOB_NAME} does not say which input made it")
    assert (out / "b.png").read_bytes() == b"copied in by hand" and len(calls) == 1


def test_an_older_job_record_without_inputs_is_refused_as_no_record(tmp_path, tiny_onnx, monkeypatch, capsys):
    """Safe over convenient: an older serving.batch's record says nothing of which input made each output, so
    they are not taken as done (as for a DST with no record); --force redoes them and records the inputs."""
    photos = _photos(tmp_path / "photos", {"a.png": 1, "b.png": 2})
    out = tmp_path / "out"
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    record = json.loads((out / JOB_NAME).read_text())
    record.pop("outputs", None)  # as the previous version wrote it
    (out / JOB_NAME).write_text(json.dumps(record))
    (out / "a.png").write_bytes(b"made by the older version")
    capsys.readouterr()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1  # before: both skipped, exit 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "is from an older serving.batch that did not record which input made each output" in err, err
    assert "2 file(s) named as this job's outputs (e.g. a.png)" in err and "pass --force" in err, err
    assert (out / "a.png").read_bytes() == b"made by the older version" and len(calls) == 1
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--force", "-q"]) == 0
    assert sorted(json.loads((out / JOB_NAME).read_text())["outputs"]) == ["a.png", "b.png"]
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and len(calls) == 2
