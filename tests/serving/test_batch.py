"""python -m serving.batch: the command line's outputs byte for byte, per-file failures in the results table,
collisions refused, a job killed half-way resumed without redoing or losing a finished file, reruns with other
options and a second job on one DST refused, the table written when a job stops early, workers the cluster
cannot place refused, and the exit status."""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli import main as cli_main
from runtime.image_metadata import ImageMetadata
from runtime.images import write_image

pytest.importorskip("ray.data", reason="serving.batch runs on Ray Data: pip install '.[batch]'")
cv2 = pytest.importorskip("cv2", reason="the video case needs OpenCV: pip install '.[video]'")

import serving.batch as batch  # noqa: E402
from serving.batch import (  # noqa: E402
    JOB_NAME,
    LOCK_NAME,
    PAUSE_ENV,
    RAY_MISSING,
    RESULTS_NAME,
    main,
    remove_stale_partials,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small seeded network as ONNX (what workers load in a fraction of a second)."""
    torch = pytest.importorskip("torch", reason="building the test network needs PyTorch: pip install '.[export]'")
    from banet.checkpoint import save_checkpoint
    from banet.config import BANetConfig
    from banet.model import BANet
    from export.to_onnx import main as export_main

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=2, dim_1=8, dim_2=16)).eval()
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)  # a visible residual, so outputs differ from inputs
    weights = save_checkpoint(model, folder / "tiny.safetensors")
    path = folder / "tiny.onnx"
    assert export_main(["--weights", str(weights), "--output", str(path), "--no-default-sweep", "--verify-sizes",
                        "1x32x32", "-q"]) == 0
    return path


def _image(h: int, w: int, seed: int, channels: int | None = 3) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _batch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A job in a fresh process (its own embedded Ray, started and stopped there)."""
    return subprocess.run([sys.executable, "-m", "serving.batch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _results(path: Path, base: Path) -> dict[str, dict]:
    """The results table's rows by input path relative to ``base``."""
    with open(path, newline="") as handle:
        return {Path(row["file"]).relative_to(base).as_posix(): row for row in csv.DictReader(handle)}


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in (RESULTS_NAME, JOB_NAME, LOCK_NAME)}


def test_same_files_as_the_cli_with_failures_and_collisions_reported(tmp_path, tiny_onnx):
    photos, more = tmp_path / "photos", tmp_path / "more"
    photos.mkdir()
    more.mkdir()
    write_image(photos / "a.png", _image(40, 56, 0))
    profile = bytes(range(256)) * 3  # carried into the output, as the command line carries it
    write_image(photos / "b.jpg", _image(64, 64, 1), ImageMetadata(icc_profile=profile))
    write_image(photos / "c.png", _image(33, 70, 2))  # odd sizes: padded to the network's multiple and back
    write_image(photos / "d.png", _image(31, 45, 3))
    write_image(photos / "grey.png", _image(48, 40, 4, channels=None))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    writer = cv2.VideoWriter(str(photos / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(4):
        writer.write(_image(32, 48, 10 + i))
    writer.release()
    write_image(more / "a.png", _image(40, 56, 5))  # photos/a.png and more/a.png: both would be out/a.png

    out = tmp_path / "out"
    done = _batch(str(photos), str(more), str(out), "--model", str(tiny_onnx), "--workers", "2", "--threads", "1")
    assert done.returncode == 1, done.stderr  # a file failed and two were refused
    assert "Traceback" not in done.stderr, done.stderr
    assert "broken.png" in done.stderr and "would both be written to" in done.stderr

    # The command line on the same files (all but the refused pair, which it would refuse as a whole run).
    reference = tmp_path / "reference"
    good = [photos / n for n in ("b.jpg", "c.png", "clip.avi", "d.png", "grey.png")]
    assert cli_main([*map(str, good), "-o", str(reference), "--model", str(tiny_onnx), "--threads", "1", "-q"]) == 0
    expected = _outputs(reference)
    assert sorted(expected) == ["b.jpg", "c.png", "clip.mp4", "d.png", "grey.png"]
    assert _outputs(out) == expected  # byte for byte; nothing for a.png, broken.png
    with Image.open(out / "b.jpg") as carried:
        assert carried.info["icc_profile"] == profile
    assert not list(out.glob("*.partial*"))

    rows = _results(out / RESULTS_NAME, tmp_path)
    assert len(rows) == 8
    broken = rows["photos/broken.png"]
    assert broken["status"] == "failed" and "broken.png" in broken["error"] and broken["worker"], broken
    for name in ("photos/a.png", "more/a.png"):
        assert rows[name]["status"] == "refused" and "would both be written to" in rows[name]["error"], rows[name]
    for name in ("b.jpg", "c.png", "d.png", "grey.png", "clip.avi"):
        row = rows[f"photos/{name}"]
        assert row["status"] == "ok" and row["error"] == "" and row["worker"], row
    assert rows["photos/clip.avi"]["frames"] == "4" and rows["photos/b.jpg"]["frames"] == "1"
    assert "5 deblurred, 1 failed, 2 refused, 0 already done" in done.stdout, done.stdout
    assert "images/s" in done.stdout


def test_killed_half_way_then_resumed(tmp_path, tiny_onnx):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [f"p{i:02d}.png" for i in range(8)]
    for i, name in enumerate(names):
        write_image(photos / name, _image(48, 64, 100 + i))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "serving.batch", str(photos), str(out), "--model", str(tiny_onnx),
               "--workers", "1", "--threads", "1", "-q"]
    # The testing hook: the worker stops (sleeps) once it has written 3 files, so the kill lands at a known point.
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True, env={**os.environ, PAUSE_ENV: "3"})
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.png"))) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray processes it started, with no clean-up
        job.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.png")}
    assert sorted(finished) == names[:3], f"killed with {sorted(finished)} done"
    # A kill during a write (here: of a --force run over a finished file) leaves its temporary file behind.
    stale = out / (sorted(finished)[0] + ".partial")
    stale.write_bytes(b"half an image")

    again = _batch(*command[3:])
    assert again.returncode == 0, again.stderr
    for name, (mtime, data) in finished.items():  # not redone, not lost
        assert (out / name).stat().st_mtime_ns == mtime and (out / name).read_bytes() == data
    assert sorted(p.name for p in out.glob("*.png")) == names and not stale.exists()
    rows = _results(out / RESULTS_NAME, photos)
    skipped = {n for n, r in rows.items() if r["status"] == "skipped"}
    redone = {n for n, r in rows.items() if r["status"] == "ok"}
    assert skipped == set(names[:3]) and redone == set(names[3:]), rows
    reference = tmp_path / "reference"
    assert cli_main([str(photos), "-o", str(reference), "--model", str(tiny_onnx), "--threads", "1", "-q"]) == 0
    assert _outputs(out) == _outputs(reference)


def test_nothing_to_do_starts_no_ray_and_results_never_replace_inputs(tmp_path, tiny_onnx, monkeypatch, capsys):
    import ray

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    write_image(photos / "a.png", _image(40, 56, 0))
    with monkeypatch.context() as patched:  # an earlier run of this job made a.png (and recorded itself)
        _fake_ray(patched)
        assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    (out / "a.png").write_bytes(b"kept")  # exists: done by an earlier run, never replaced
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    assert not ray.is_initialized() and (out / "a.png").read_bytes() == b"kept"
    assert "0 deblurred, 0 failed, 0 refused, 1 already done" in capsys.readouterr().out
    assert _results(out / RESULTS_NAME, photos)["a.png"]["status"] == "skipped"

    notes = tmp_path / "notes.csv"
    notes.write_text("mine\n")
    for results, needle, force in ((photos / "table.csv", "among the inputs", []), (notes, "not a results table", []),
                                   (out / "a.png", "would replace an output", []),
                                   # before: the job record written over the table, exit 0, even with --force
                                   (out / "banet-batch-job.json", "this job's banet-batch-job.json", ["--force"]),
                                   (out / ".banet-batch.lock", "this job's .banet-batch.lock", [])):
        assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(results), "-q", *force]) == 1
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert notes.read_text() == "mine\n" and not (photos / "table.csv").exists()
    assert main([str(photos), str(out), "--model", str(tmp_path / "missing.onnx"), "-q"]) == 1
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    # A cluster address nobody answers at: one line at once (Ray itself would retry for minutes).
    assert main([str(photos), str(tmp_path / "out2"), "--model", str(tiny_onnx), "--address", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "nothing answers at 127.0.0.1:1" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out2").exists()  # refused before DST is made


def test_stale_partials_of_ours_only(tmp_path):
    image, video = tmp_path / "a.png", tmp_path / "clip.mp4"
    for partial in (tmp_path / "a.png.partial", tmp_path / "clip.mp4.partial.mp4", tmp_path / "b.png.partial"):
        partial.write_bytes(b"x")
    # b.png.partial is also an input here: never removed.
    assert remove_stale_partials([image, video, tmp_path / "b.png"], [tmp_path / "b.png.partial"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png.partial"]


def test_a_kept_containers_output_that_is_its_input_is_refused_even_with_force(tmp_path):
    from runtime.cli import collect_named

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "IMG_0001.MOV").write_bytes(b"an iPhone clip")  # refused from its name: never opened
    (dst / "IMG_0001.MOV").symlink_to(src / "IMG_0001.MOV")  # DST holds a link to it under the output's name
    named = collect_named([src], exclude=dst)
    rows, todo = batch.plan([source for source, _ in named], [dst / name for _, name in named], force=True)
    # before: the output was IMG_0001.mp4, beside the link; now it is the link's name, never written through
    assert todo == [] and rows[0]["status"] == "refused", rows
    assert "is the same file as the input" in rows[0]["error"] and rows[0]["output"].endswith("IMG_0001.MOV")
    partial = dst / "IMG_0001.MOV.partial.MOV"  # a killed run's temporary file, in the container's extension
    partial.write_bytes(b"half a clip")
    assert remove_stale_partials([dst / "IMG_0001.MOV"], [src / "IMG_0001.MOV"]) == 1 and not partial.exists()


def test_without_ray_one_line(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from serving.batch import main; "
            f"raise SystemExit(main([{str(tmp_path)!r}, {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == RAY_MISSING and not (tmp_path / "out").exists()


def _one_photo(tmp_path: Path, names=("a.png",)) -> tuple[Path, Path]:
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for i, name in enumerate(names):
        write_image(photos / name, _image(40, 56, i))
    return photos, out


def _fake_ray(monkeypatch, stop=None, fill: int | None = None) -> list:
    """Replace the Ray part of a job: fill the first ``fill`` (default all) planned rows as deblurred, then raise
    ``stop`` (an exception) or return it (an exit status); returns the planned file lists it was called with."""
    calls = []

    def fake(args, address, jobs, rows, todo, timing):
        calls.append([source.name for source, _ in jobs])
        for index, (source, target) in list(zip(todo, jobs))[:fill]:
            target.write_bytes(b"deblurred")
            rows[index] = dict(file=str(source), output=str(target), status="ok", error="", seconds=0.1, frames=1,
                               worker="fake", started=1.0, finished=2.0)
        if isinstance(stop, BaseException):
            raise stop
        return stop or 0

    monkeypatch.setattr(batch, "_deblur_on_ray", fake)
    return calls


def test_rerun_with_other_options_refused_unless_force(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path)
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    record = json.loads((out / JOB_NAME).read_text())
    assert record["options"]["model"]["sha256"] == batch.file_sha256(tiny_onnx) and record["options"]["tile"] is None
    capsys.readouterr()
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_onnx.read_bytes() + b"\0")
    for extra, named in ((["--tile", "64"], "--tile"), (["--side-by-side"], "--side-by-side"),
                         (["--strip-metadata"], "--strip-metadata")):
        assert main([str(photos), str(out), "--model", str(tiny_onnx), *extra, "-q"]) == 1
        err = capsys.readouterr().err
        assert f"({named} differ" in err and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert main([str(photos), str(out), "--model", str(other), "-q"]) == 1
    assert "(--model differ" in capsys.readouterr().err
    assert len(calls) == 1 and (out / "a.png").read_bytes() == b"deblurred"  # nothing redone, nothing mixed
    # The same options resume; --force redoes every file with the new ones and records them.
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and len(calls) == 1
    assert main([str(photos), str(out), "--model", str(other), "--tile", "64", "--force", "-q"]) == 0
    assert calls[-1] == ["a.png"]
    record = json.loads((out / JOB_NAME).read_text())
    assert record["options"]["tile"] == 64 and record["options"]["model"]["path"] == str(other.resolve())
    # A job that wrote nothing (its workers could not load the model) pins nothing: other options need no --force.
    fresh = tmp_path / "fresh"
    _fake_ray(monkeypatch, stop=1, fill=0)
    assert main([str(photos), str(fresh), "--model", str(other), "-q"]) == 1
    _fake_ray(monkeypatch)
    assert main([str(photos), str(fresh), "--model", str(tiny_onnx), "-q"]) == 0
    record = json.loads((fresh / JOB_NAME).read_text())
    assert record["options"]["model"]["path"] == str(tiny_onnx.resolve()) and not record["redoing"]


def test_second_job_on_the_same_dst_refused(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path)
    calls = _fake_ray(monkeypatch)
    out.mkdir()
    with open(out / LOCK_NAME, "a") as held:  # what a running job holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1
        err = capsys.readouterr().err
        assert "another serving.batch job is running on" in err and len(err.strip().splitlines()) == 1, err
        assert not calls and not (out / RESULTS_NAME).exists() and not (out / JOB_NAME).exists()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0 and calls == [["a.png"]]


def test_results_table_written_when_the_job_stops_early(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path, ("a.png", "b.png", "c.png"))
    _fake_ray(monkeypatch, stop=KeyboardInterrupt(), fill=1)  # Ctrl-C after the first file
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err
    rows = _results(out / RESULTS_NAME, photos)
    assert [rows[n]["status"] for n in ("a.png", "b.png", "c.png")] == ["ok", "not run", "not run"], rows
    assert "run the same command again" in rows["b.png"]["error"]
    # A job Ray stopped (a worker without its model...): exit 1, the table says which files were not run.
    _fake_ray(monkeypatch, stop=1, fill=1)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1
    rows = _results(out / RESULTS_NAME, photos)
    assert [rows[n]["status"] for n in ("a.png", "b.png", "c.png")] == ["skipped", "ok", "not run"], rows
    assert "1 not run (the job stopped early)" in capsys.readouterr().out


def test_another_jobs_results_table_is_not_replaced(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path)
    _fake_ray(monkeypatch)
    first = tmp_path / "first"
    assert main([str(photos), str(first), "--model", str(tiny_onnx), "-q"]) == 0
    theirs = first / RESULTS_NAME
    before = theirs.read_bytes()
    capsys.readouterr()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(theirs), "-q"]) == 1
    err = capsys.readouterr().err
    assert "results table of another serving.batch job" in err and len(err.strip().splitlines()) == 1, err
    assert theirs.read_bytes() == before and not out.exists()
    # This job's own table (named by its job record) is replaced on a rerun without --force.
    mine = tmp_path / "mine.csv"
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(mine), "-q"]) == 0
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(mine), "-q"]) == 0
    assert _results(mine, photos)["a.png"]["status"] == "skipped"
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(theirs), "--force", "-q"]) == 0


def _capacity(cpus: float = 4, gpus: float = 0, memory: float = 16 * 2**30, nodes: int = 1) -> dict:
    """A cluster of ``nodes`` equal nodes with these resources each."""
    node = {"CPU": cpus, "GPU": gpus, "memory": memory}
    return {**{k: v * nodes for k, v in node.items()}, **{f"node_{k}": v for k, v in node.items()}}


def test_workers_the_cluster_cannot_place_are_refused_at_once(tmp_path, tiny_onnx, monkeypatch, capsys):
    import ray

    photos, out = _one_photo(tmp_path, ("a.png", "b.png"))
    pipelines = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(batch, "_pipeline", lambda *args: pipelines.append(args) or [][0])
    cluster = {"capacity": _capacity(cpus=4, gpus=0)}
    monkeypatch.setattr(batch, "cluster_capacity", lambda: cluster["capacity"])
    base = [str(photos), str(out), "--model", str(tiny_onnx), "--address", "auto", "--force", "-q"]
    for extra, needle in ((["--gpus-per-worker", "2"], "--gpus-per-worker 2: no node of the Ray cluster has 2"),
                          (["--threads", "8"], "--threads 8: no node of the Ray cluster has 8 CPUs"),
                          (["--workers", "2", "--threads", "3"], "2 worker(s) x 3 thread(s) need 6 CPUs")):
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    cluster["capacity"] = _capacity(cpus=8, gpus=2)
    assert main(base + ["--workers", "2", "--gpus-per-worker", "2"]) == 1
    assert "2 worker(s) x 2 GPU(s) need 4 GPUs; the Ray cluster has 2" in capsys.readouterr().err
    cluster["capacity"] = _capacity(cpus=8, memory=2**30)
    assert main(base) == 1
    assert "no node of the Ray cluster offers that much" in capsys.readouterr().err
    assert not pipelines and _results(out / RESULTS_NAME, photos)["a.png"]["status"] == "not run"
    # The backstop for what the check cannot see: Ray Data waits a bounded time for its workers, not forever.
    assert ray.data.DataContext.get_current().wait_for_min_actors_s == batch.ACTOR_START_TIMEOUT_S
    # A cluster that can: the workers reserve their memory (model and working budget) and start.
    cluster["capacity"] = _capacity(cpus=8, gpus=2, nodes=2)
    assert main(base + ["--gpus-per-worker", "1"]) == 1  # the stand-in pipeline is empty: an error
    (args, jobs, todo, workers, threads, memory), = pipelines
    assert workers == 2 and threads is None and memory == batch.worker_memory(args)
    assert memory >= (768 + batch.WORKER_OVERHEAD_MB) * 2**20 + 2 * tiny_onnx.stat().st_size


def test_default_workers_fit_the_cluster():
    args = argparse.Namespace(threads=None, workers=None, gpus_per_worker=0)
    gib = 2**30
    assert batch.DEFAULT_WORKER_THREADS == 4
    assert batch._workers_and_threads(args, _capacity(cpus=64, memory=64 * gib), 100, 2 * gib) == (16, 4)
    assert batch._workers_and_threads(args, _capacity(cpus=64, memory=16 * gib), 100, 2 * gib) == (8, 4)
    assert batch._workers_and_threads(args, _capacity(cpus=2, memory=64 * gib), 100, 2 * gib) == (1, 2)
    assert batch._workers_and_threads(args, _capacity(cpus=4, nodes=3, memory=64 * gib), 100, 2 * gib) == (3, 4)
    assert batch._workers_and_threads(args, _capacity(cpus=3, nodes=2, memory=64 * gib), 100, 2 * gib) == (2, 3)
    assert batch._workers_and_threads(args, _capacity(cpus=64, memory=64 * gib), 3, 2 * gib) == (3, 4)
    two = argparse.Namespace(threads=None, workers=2, gpus_per_worker=0)
    assert batch._workers_and_threads(two, _capacity(cpus=4, memory=64 * gib), 100, 2 * gib) == (2, 2)
    gpu = argparse.Namespace(threads=None, workers=None, gpus_per_worker=2)
    assert batch._workers_and_threads(gpu, _capacity(cpus=8, gpus=8, memory=64 * gib), 100, 2 * gib) == (4, None)


def test_exit_status_usage_errors_are_2_set_up_errors_1(tmp_path, capsys):
    # --threads 0 and -1: before, a ZeroDivisionError after Ray had started (exit 1), and exit 1
    for bad in (["--workers", "0"], ["--gpus-per-worker", "x"], ["--gpus-per-worker", "-1"], ["--no-such-option"],
                ["--threads", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit) as stopped:
            main([str(tmp_path), str(tmp_path / "out"), *bad])
        assert stopped.value.code == 2, bad
    assert "--workers: must be at least 1, got 0" in capsys.readouterr().err
    args = batch.build_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "--gpus-per-worker", "0"])
    assert args.gpus_per_worker == 0  # the default, "CPU workers", may be given (before: "must be at least 1")
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1  # nothing to plan
    assert "missing: no such file or folder" in capsys.readouterr().err
    help_text = batch.build_parser().format_help()
    assert "exit status:" in help_text and "130" in help_text


def test_videos_are_synced_before_their_rename(tmp_path, monkeypatch):
    import runtime.cli as cli

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(2):
        writer.write(_image(32, 48, i))
    writer.release()
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    target = tmp_path / "out.mp4"
    assert cli.process_video(lambda frame: frame, clip, target, with_side=False) == 2
    partial = str(tmp_path / "out.mp4.partial.mp4")
    assert partial in synced and target.stat().st_size > 0 and not Path(partial).exists()


def test_a_forced_change_of_options_must_finish_before_resuming(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path, ("a.png", "b.png"))
    _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    _fake_ray(monkeypatch, stop=1, fill=1)  # --tile 64 --force stops after a.png: b.png is still the old one's
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "--force", "-q"]) == 1
    capsys.readouterr()
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "-q"]) == 1
    err = capsys.readouterr().err
    assert "stopped before redoing every file" in err and len(err.strip().splitlines()) == 1, err
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "--force", "-q"]) == 0
    assert calls == [["a.png", "b.png"]] and not json.loads((out / JOB_NAME).read_text())["redoing"]
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "-q"]) == 0  # resumable again


def test_another_cards_outputs_made_with_other_options_are_not_skipped_as_done(tmp_path, tiny_onnx, monkeypatch,
                                                                                capsys):
    """Round 17: card1 into DST, then card2 with --tile 64 (its own files: accepted, and the record's options
    rewritten), then card1 again with --tile 64: "2 already done", exit 0, its whole-image outputs kept as tiled."""
    card1, out = _one_photo(tmp_path, ("a.png",))
    card2 = tmp_path / "card2"
    card2.mkdir()
    write_image(card2 / "b.png", _image(40, 56, 7))
    calls = _fake_ray(monkeypatch)
    assert main([str(card1), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    capsys.readouterr()
    assert main([str(card2), str(out), "--model", str(tiny_onnx), "--tile", "64", "-q"]) == 1  # was accepted
    assert "(--tile differ" in capsys.readouterr().err and len(calls) == 1
    # with --force card2 is made with --tile 64, and card1's output is no longer vouched for as done
    assert main([str(card2), str(out), "--model", str(tiny_onnx), "--tile", "64", "--force", "-q"]) == 0
    assert main([str(card1), str(out), "--model", str(tiny_onnx), "--tile", "64", "-q"]) == 1
    err = capsys.readouterr().err
    assert "does not say which input made it" in err and calls == [["a.png"], ["b.png"]]


def test_a_file_that_failed_without_output_does_not_keep_a_forced_change_open(tmp_path, tiny_onnx, monkeypatch,
                                                                              capsys):
    """Round 17: with one damaged photo among the inputs, "redoing" never cleared: every later run without
    --force was refused ("a --force run that changed the options stopped before redoing every file")."""
    photos, out = _one_photo(tmp_path, ("a.png", "b.png"))
    _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    (out / "b.png").unlink()

    def fail_b(args, address, jobs, rows, todo, timing):
        for index, (source, target) in zip(todo, jobs):
            if source.name == "b.png":
                rows[index] = dict(file=str(source), output=str(target), status="failed", error="damaged",
                                   seconds=0.0, frames=0, worker="fake")
            else:
                target.write_bytes(b"deblurred")
                rows[index] = dict(file=str(source), output=str(target), status="ok", error="", seconds=0.1,
                                   frames=1, worker="fake")
        return 0

    monkeypatch.setattr(batch, "_deblur_on_ray", fail_b)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "--force", "-q"]) == 1
    assert not json.loads((out / JOB_NAME).read_text())["redoing"]
    capsys.readouterr()
    calls = _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--tile", "64", "-q"]) == 0  # resumes
    assert calls == [["b.png"]]


def test_outputs_in_place_when_the_job_stopped_are_counted_done(tmp_path, tiny_onnx, monkeypatch):
    """Round 17: a Ctrl-C after workers had put outputs in place (before the driver heard of them) listed those
    files as "not run" in the results table, though the next run found them done."""
    photos, out = _one_photo(tmp_path, ("a.png", "b.png", "c.png"))

    def stopped(args, address, jobs, rows, todo, timing):
        jobs[0][1].write_bytes(b"deblurred")  # a.png's worker finished; the driver never heard
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_deblur_on_ray", stopped)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 130
    with open(out / RESULTS_NAME, newline="") as table:
        statuses = {Path(row["file"]).name: row["status"] for row in csv.DictReader(table)}
    assert statuses == {"a.png": "ok", "b.png": "not run", "c.png": "not run"}


def test_a_stop_while_ray_starts_removes_what_it_started(tmp_path, tiny_onnx, monkeypatch, capsys):
    """Round 17: Ctrl-C during ray.init skipped ray.shutdown() and the removal of its temporary folder (an
    ``except Exception``): Ray's agents ran on, orphaned, and /tmp/banet-ray-* stayed."""
    import ray

    photos, out = _one_photo(tmp_path)
    removed = []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "init", interrupted)
    monkeypatch.setattr(batch, "remove_ray_temp_dir", lambda path, attempts=3: removed.append(path))
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 130
    assert removed and removed[0] is not None
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


def _one_line(err: str, needle: str) -> None:
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_dst_that_is_src_a_file_or_not_utf8_refused_before_writing(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, _ = _one_photo(tmp_path)
    calls = _fake_ray(monkeypatch)
    before = sorted(p.name for p in photos.iterdir())
    # DST = SRC: was a misleading "results table among the inputs" (or, with --results elsewhere, the job's lock
    # and record written into the photos folder and every file refused).
    for extra in ([], ["--results", str(tmp_path / "r.csv")]):
        assert main([str(photos), str(photos), "--model", str(tiny_onnx), "-q", *extra]) == 1
        _one_line(capsys.readouterr().err, "is also an input folder (SRC)")
    assert sorted(p.name for p in photos.iterdir()) == before and not (tmp_path / "r.csv").exists()
    model_bytes = tiny_onnx.read_bytes()
    assert main([str(photos), str(tiny_onnx), "--model", str(tiny_onnx), "-q"]) == 1  # was "[Errno 17] File exists"
    _one_line(capsys.readouterr().err, "exists and is not a folder")
    assert tiny_onnx.read_bytes() == model_bytes
    # A name that is not UTF-8: Ray could not start ('surrogates not allowed'), then a traceback printing the summary.
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out\xff"))
    assert main([str(photos), str(odd), "--model", str(tiny_onnx), "-q"]) == 1
    _one_line(capsys.readouterr().err, "out\\xff: the name is not valid UTF-8")
    assert not odd.exists() and not calls


def test_file_names_that_are_not_utf8_go_to_the_results_table(tmp_path, tiny_onnx, monkeypatch):
    photos, out = _one_photo(tmp_path)
    odd = os.fsencode(photos) + b"/caf\xe9.png"  # a Latin-1 name from an old camera or archive
    (photos / "a.png").rename(os.fsdecode(odd))
    _fake_ray(monkeypatch)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0  # was UnicodeEncodeError, no table
    table = (out / RESULTS_NAME).read_text(encoding="utf-8")
    assert "caf\\xe9.png" in table and ",ok," in table, table
    assert os.path.exists(os.fsencode(out) + b"/caf\xe9.png")


def test_links_planted_in_dst_are_never_written_through(tmp_path, tiny_onnx, monkeypatch):
    photos, out = _one_photo(tmp_path, ("a.png", "b.png", "c.png"))
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    victim = photos / "b.png"
    original = victim.read_bytes()
    # Temporary names an attacker (or a broken earlier tool) left as links: to nothing outside DST, to an input.
    (out / "a.png.partial").symlink_to(outside / "evil.png")
    (out / "c.png.partial").symlink_to(victim)
    (out / f"{RESULTS_NAME}.partial").symlink_to(outside / "evil.csv")
    assert remove_stale_partials([out / "a.png", out / "c.png"], [photos / n for n in ("a.png", "b.png", "c.png")]) \
        == 2
    (out / "a.png.partial").symlink_to(outside / "evil.png")
    (out / "c.png.partial").symlink_to(victim)

    def fake(args, address, jobs, rows, todo, timing):  # writes as the workers do: through the temporary name
        from banet.outputs import write_atomic

        for index, (source, target) in zip(todo, jobs):
            write_atomic(target, b"deblurred")
            rows[index] = dict(file=str(source), output=str(target), status="ok", error="", seconds=0.1, frames=1,
                               worker="fake")
        return 0

    monkeypatch.setattr(batch, "_deblur_on_ray", fake)
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    assert not list(outside.iterdir()) and victim.read_bytes() == original  # were evil.png, evil.csv, b.png changed
    assert all(not (out / n).is_symlink() and (out / n).read_bytes() == b"deblurred" for n in ("a.png", "c.png"))
    # The lock is never opened through a link either (one to nothing would create its target).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_NAME).symlink_to(outside / "lock")
    assert main([str(photos), str(fresh), "--model", str(tiny_onnx), "-q"]) == 1
    assert not (outside / "lock").exists()


def test_a_job_record_the_user_made_is_not_replaced(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path)
    calls = _fake_ray(monkeypatch)
    out.mkdir()
    (out / JOB_NAME).write_text('{"my": "notes"}\n')
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1
    _one_line(capsys.readouterr().err, "is not the job record of serving.batch; pass --force")
    assert (out / JOB_NAME).read_text() == '{"my": "notes"}\n' and not calls
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--force", "-q"]) == 0 and calls == [["a.png"]]
    assert json.loads((out / JOB_NAME).read_text())["tool"] == "serving.batch"


def test_outputs_another_tool_made_are_not_taken_for_finished_ones(tmp_path, tiny_onnx, monkeypatch, capsys):
    photos, out = _one_photo(tmp_path, ("a.png", "b.png"))
    calls = _fake_ray(monkeypatch)
    out.mkdir()
    (out / "a.png").write_bytes(b"side by side, from python -m runtime")  # no job record: not this job's
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 1
    # before: "1 of 2 file(s) already done (skipped)", a.png kept as if deblurred with these options
    _one_line(capsys.readouterr().err, "already holds 1 file(s) named as this job's outputs (e.g. a.png) but no "
              f"{JOB_NAME}")
    assert not calls and not (out / JOB_NAME).exists()
    assert (out / "a.png").read_bytes() == b"side by side, from python -m runtime"
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "--force", "-q"]) == 0
    assert sorted(calls[-1]) == ["a.png", "b.png"] and (out / "a.png").read_bytes() == b"deblurred"


def test_recursive_job_mirrors_the_tree_below_each_folder(tmp_path, tiny_onnx, monkeypatch):
    names = ("2024/05/IMG_0001.png", "2024/06/IMG_0001.png", "top.png")  # cameras reuse names across folders
    photos = tmp_path / "photos"
    out = photos / "deblurred"  # DST inside SRC: never read as input
    for i, name in enumerate(names):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(photos / name, _image(40, 56, i))
    (out / "2024" / "05").mkdir(parents=True)
    write_image(out / "2024" / "05" / "IMG_0001.png", _image(40, 56, 9))  # an earlier output
    planned = []
    monkeypatch.setattr(batch, "_deblur_on_ray", lambda args, address, jobs, rows, todo, timing: planned.extend(
        (source.relative_to(photos), target.relative_to(out)) for source, target in jobs) or 1)
    main([str(photos), str(out), "--model", str(tiny_onnx), "--recursive", "--force", "-q"])
    # every photo below SRC, to the same place below DST (before: no --recursive, only top.png)
    assert sorted(planned) == sorted((Path(n), Path(n)) for n in names)


def test_sigterm_stops_like_ctrl_c_and_ray_leaves_no_session_folder(tmp_path, tiny_onnx):
    photos, out = _one_photo(tmp_path, ("a.png", "b.png", "ünï 照片.png"))
    temp = Path(tempfile.mkdtemp(prefix="bt", dir="/tmp"))  # short: Ray's sockets go under it
    try:
        env = {**os.environ, "TMPDIR": str(temp), PAUSE_ENV: "1"}
        command = [sys.executable, "-m", "serving.batch", str(photos), str(out), "--model", str(tiny_onnx),
                   "--workers", "1", "--threads", "1", "-q"]
        job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)  # the driver only, as a service manager would
        _, err = job.communicate(timeout=60)
        assert job.returncode == 143, err  # was 15, after a C++ stack dump ("*** SIGTERM received ...")
        _one_line(err, "terminated (SIGTERM): finished files are kept")
        # each file is "ok" exactly where its output is in place (round 17: one a worker finished before the driver
        # heard of it was "not run"), the one the worker paused before is "not run"
        statuses = {name: row["status"] for name, row in _results(out / RESULTS_NAME, photos).items()}
        assert statuses == {name: "ok" if (out / name).exists() else "not run" for name in statuses}, statuses
        assert "not run" in statuses.values()
        # Ray's session folder (logs, sockets) was TMPDIR/ray/session_*, left behind after every run.
        assert not [p for p in temp.iterdir() if p.name == "ray" or p.name.startswith("banet-ray-")]
        del env[PAUSE_ENV]
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "ünï 照片.png"]
        assert not [p for p in temp.iterdir() if p.name == "ray" or p.name.startswith("banet-ray-")]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
