"""python -m serving.batch: the command line's outputs byte for byte, per-file failures in the results table,
collisions refused, and a job killed half-way resumed without redoing or losing a finished file."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main as cli_main
from runtime.images import write_image

pytest.importorskip("ray.data", reason="serving.batch runs on Ray Data: pip install '.[batch]'")
cv2 = pytest.importorskip("cv2", reason="the video case needs OpenCV: pip install '.[video]'")

from serving.batch import RAY_MISSING, RESULTS_NAME, main, remove_stale_partials  # noqa: E402

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
    return subprocess.run([sys.executable, "-m", "serving.batch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _results(path: Path, base: Path) -> dict[str, dict]:
    """The results table's rows by input path relative to ``base``."""
    with open(path, newline="") as handle:
        return {Path(row["file"]).relative_to(base).as_posix(): row for row in csv.DictReader(handle)}


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != RESULTS_NAME}


def test_same_files_as_the_cli_with_failures_and_collisions_reported(tmp_path, tiny_onnx):
    photos, more = tmp_path / "photos", tmp_path / "more"
    photos.mkdir()
    more.mkdir()
    write_image(photos / "a.png", _image(40, 56, 0))
    write_image(photos / "b.jpg", _image(64, 64, 1))
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
    names = [f"p{i:02d}.png" for i in range(16)]
    for i, name in enumerate(names):
        write_image(photos / name, _image(256, 320, 100 + i))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "serving.batch", str(photos), str(out), "--model", str(tiny_onnx),
               "--workers", "1", "--threads", "1", "-q"]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray processes it started, with no clean-up
        job.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.png")}
    assert 0 < len(finished) < len(names), f"killed with {len(finished)} of {len(names)} done"
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
    # A worker may finish the file in its hands just after the driver died: also complete, also skipped.
    assert set(finished) <= skipped and not skipped & redone and skipped | redone == set(names), rows
    reference = tmp_path / "reference"
    assert cli_main([str(photos), "-o", str(reference), "--model", str(tiny_onnx), "--threads", "1", "-q"]) == 0
    assert _outputs(out) == _outputs(reference)


def test_nothing_to_do_starts_no_ray_and_results_never_replace_inputs(tmp_path, tiny_onnx, capsys):
    import ray

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    write_image(photos / "a.png", _image(40, 56, 0))
    (out / "a.png").write_bytes(b"kept")  # exists: done by an earlier run (or the user's), never replaced
    assert main([str(photos), str(out), "--model", str(tiny_onnx), "-q"]) == 0
    assert not ray.is_initialized() and (out / "a.png").read_bytes() == b"kept"
    assert "0 deblurred, 0 failed, 0 refused, 1 already done" in capsys.readouterr().out
    assert _results(out / RESULTS_NAME, photos)["a.png"]["status"] == "skipped"

    notes = tmp_path / "notes.csv"
    notes.write_text("mine\n")
    for results, needle in ((photos / "table.csv", "among the inputs"), (notes, "not a results table"),
                            (out / "a.png", "would replace an output")):
        assert main([str(photos), str(out), "--model", str(tiny_onnx), "--results", str(results), "-q"]) == 1
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert notes.read_text() == "mine\n" and not (photos / "table.csv").exists()
    assert main([str(photos), str(out), "--model", str(tmp_path / "missing.onnx"), "-q"]) == 1
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    # A cluster address nobody answers at: one line at once (Ray itself would retry for minutes).
    assert main([str(photos), str(tmp_path / "out2"), "--model", str(tiny_onnx), "--address", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "nothing answers at 127.0.0.1:1" in err and len(err.strip().splitlines()) == 1, err


def test_stale_partials_of_ours_only(tmp_path):
    image, video = tmp_path / "a.png", tmp_path / "clip.mp4"
    for partial in (tmp_path / "a.png.partial", tmp_path / "clip.mp4.partial.mp4", tmp_path / "b.png.partial"):
        partial.write_bytes(b"x")
    # b.png.partial is also an input here: never removed.
    assert remove_stale_partials([image, video, tmp_path / "b.png"], [tmp_path / "b.png.partial"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png.partial"]


def test_without_ray_one_line(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from serving.batch import main; "
            f"raise SystemExit(main([{str(tmp_path)!r}, {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == RAY_MISSING and not (tmp_path / "out").exists()
