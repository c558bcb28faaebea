"""The command line: files, folders and videos in, outputs that never overwrite inputs."""

import cv2
import pytest

from runtime.cli import main
from runtime.images import read_image, write_image
from tests.runtime.sample_images import random_image as _image


def test_files_and_folders(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", _image())
    write_image(src / "b.jpg", _image(seed=1))
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main([str(src), "--output", str(out), "--model", str(tiny_weights), "-q"]) == 0
    assert read_image(out / "a.png").shape == (40, 56, 3)
    assert (out / "b.jpg").exists() and not (out / "notes.txt").exists()
    assert "deblurred 2 of 2" in capsys.readouterr().out


def test_side_by_side_and_no_overwrite(tmp_path, tiny_weights, capsys):
    write_image(tmp_path / "a.png", _image())
    before = (tmp_path / "a.png").read_bytes()
    # Writing into the input's own folder would replace the input: refused.
    assert main([str(tmp_path / "a.png"), "--output", str(tmp_path), "--model", str(tiny_weights), "-q"]) == 1
    assert "is the same file as the input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before
    out = tmp_path / "out"
    assert main([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_weights), "--side-by-side", "-q"]) == 0
    assert read_image(out / "a.png").shape == (40, 56 * 2 + 8, 3)
    assert main([str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    assert "pass --force" in capsys.readouterr().err


def test_video(tmp_path, tiny_weights):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(5):
        writer.write(_image(32, 48, seed=i))
    writer.release()
    out = tmp_path / "out"
    assert main([str(path), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5


def test_bad_inputs(tmp_path, tiny_weights, capsys):
    assert main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_weights)]) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "fake.png").write_text("text")
    assert main([str(tmp_path / "fake.png"), "-o", str(tmp_path / "o"), "--model", str(tiny_weights), "-q"]) == 1
    assert "not an image OpenCV can decode" in capsys.readouterr().err


def test_subfolders_with_photos_are_named_not_silently_left_out(tmp_path, tiny_weights, capsys, caplog):
    card = tmp_path / "DCIM"
    for folder in ("100CANON", "101CANON"):
        (card / folder).mkdir(parents=True)
        write_image(card / folder / f"IMG_{folder}.png", _image())
    (card / "MISC").mkdir()  # no photos: not named
    (card / "MISC" / "notes.txt").write_text("settings")
    # Nothing at the top: the error names where the photos are (before: "no images or videos found in DCIM").
    assert main([str(card), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err
    assert "2 subfolder(s) holding images or videos" in err and "100CANON" in err and "MISC" not in err, err
    # A photo at the top too: it is deblurred, and the subfolders left out are said (before: silently).
    write_image(card / "top.png", _image())
    assert main([str(card), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert "subfolder(s) holding images or videos" in caplog.text and "101CANON" in caplog.text
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["top.png"]
    # Given as inputs, as the message says, they are deblurred.
    assert main([str(card / "100CANON"), str(card / "101CANON"), "-o", str(tmp_path / "out2"), "--model",
                 str(tiny_weights), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["IMG_100CANON.png", "IMG_101CANON.png"]


def test_hidden_files_in_a_folder_are_left_out(tmp_path, tiny_weights):
    card = tmp_path / "100CANON"
    card.mkdir()
    write_image(card / "IMG_0001.png", _image())
    (card / "._IMG_0001.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS AppleDouble metadata, not an image
    # before: exit 1, "._IMG_0001.png: not an image OpenCV can decode"
    assert main([str(card), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["IMG_0001.png"]


def test_recursive_mirrors_the_tree_and_never_reads_its_own_outputs(tmp_path, tiny_weights, capsys):
    card = tmp_path / "DCIM"
    for folder in ("100CANON", "101CANON"):  # cameras reuse names across folders
        (card / folder).mkdir(parents=True)
        write_image(card / folder / "IMG_0001.png", _image())
    (card / ".thumbnails").mkdir()
    write_image(card / ".thumbnails" / "t.png", _image())  # hidden: left out
    # Flattened, the two IMG_0001.png would land on one output: refused before anything is written.
    assert main([str(card / "100CANON"), str(card / "101CANON"), "-o", str(tmp_path / "flat"), "--model",
                 str(tiny_weights), "-q"]) == 1
    assert "IMG_0001.png" in capsys.readouterr().err and not (tmp_path / "flat").exists()
    out = card / "deblurred"  # inside the folder given: never read back as input
    for extra in ([], ["--force"]):
        assert main([str(card), "-r", "-o", str(out), "--model", str(tiny_weights), "-q", *extra]) == 0
        assert "deblurred 2 of 2 file(s)" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "100CANON/IMG_0001.png", "101CANON/IMG_0001.png"]
    assert read_image(out / "101CANON" / "IMG_0001.png").shape == _image().shape


def test_files_that_are_not_images_or_videos_are_counted_not_silently_left_out(tmp_path, tiny_weights, capsys,
                                                                               caplog):
    card = tmp_path / "100CANON"
    card.mkdir()
    for i in range(3):
        (card / f"IMG_000{i}.CR3").write_bytes(b"raw sensor data")
    (card / "IMG_0000.XMP").write_text("<x:xmpmeta/>")  # a sidecar
    (card / "._IMG_0000.CR3").write_bytes(bytes(8))  # hidden (macOS AppleDouble): left out in silence, as before
    out = tmp_path / "out"
    # Raw files only: the error says what was there (before: "no images or videos found in 100CANON", no more).
    assert main([str(card), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no images or videos found in {card}; left out 4 file(s) that are not images or "
                          "videos: 3 .CR3, 1 .XMP (camera raw files are not deblurred: develop them to JPEG, TIFF or "
                          "PNG first)") and len(err.strip().splitlines()) == 1, err
    # RAW+JPEG: the photos are deblurred and the raw files are named in one warning (before: in silence).
    write_image(card / "IMG_0000.png", _image())
    assert main([str(card), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    [warning] = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert warning.startswith("left out 4 file(s) that are not images or videos: 3 .CR3, 1 .XMP (camera raw"), warning
    assert [p.name for p in out.iterdir()] == ["IMG_0000.png"]
    caplog.clear()
    # A file given by name is taken as it is: it fails as one, with no count of files left out.
    assert main([str(card / "IMG_0001.CR3"), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    assert "not an image" in capsys.readouterr().err and "left out" not in caplog.text


def test_with_recursive_files_below_are_counted_too_but_not_the_outputs(tmp_path, tiny_weights, caplog):
    trip = tmp_path / "trip"
    (trip / "day1").mkdir(parents=True)
    write_image(trip / "day1" / "a.png", _image())
    for name in ("notes.txt", "day1/README", "day1/b.gpx", "day1/c.GPX", "day1/route.gpx", "day1/w.pdf",
                 "day1/x.aae", "day1/y.lrv", "day1/.DS_Store"):
        (trip / name).write_text("not a photo")
    out = trip / "deblurred"  # inside the folder given: never read, its files not counted
    out.mkdir()
    (out / "log.txt").write_text("an earlier run")
    assert main([str(trip), "-r", "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    [warning] = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    # the most frequent first (whatever their case), five named; no raw files, so no word about them
    assert warning == "left out 8 file(s) that are not images or videos: 3 .gpx, 1 .txt, 1 without an extension, " \
                      "1 .pdf, 1 .aae, ...", warning


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, tiny_weights, capsys,
                                                                                  monkeypatch):
    """A read-only mount: each photo was deblurred, then failed to be written, one by one (minutes each for large
    photos). Running as root here, the folder is made unwritable by failing the file creation the check makes."""
    import errno
    import tempfile

    import runtime

    write_image(tmp_path / "a.png", _image(40, 56))
    out = tmp_path / "out"
    out.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    monkeypatch.setattr(runtime, "Deblurrer", lambda **kwargs: pytest.fail("the model loaded"))
    assert main([str(tmp_path / "a.png"), "--model", str(tiny_weights), "-o", str(out), "-q"]) == 1
    assert capsys.readouterr().err == f"error: cannot write into the output folder {out}: Read-only file system\n"


def test_a_tile_the_model_cannot_take_is_refused_once(tmp_path, tiny_weights, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, _image(40, 56))
    argv = [str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(tiny_weights), "--backend",
            "onnxruntime", "--tile", "3", "--tile-overlap", "0", "-o", str(tmp_path / "out" / "new"), "-q"]
    assert main(argv) == 2  # a usage error, as argparse's (round 17: it was 1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tile must be a multiple of 2" in err  # before: one error per file


def test_an_output_name_stdout_cannot_encode_is_printed_escaped(tmp_path, tiny_weights):
    """With a strict UTF-8 stdout (a desktop locale), a folder name of other bytes raised UnicodeEncodeError after
    the work was done: a traceback and exit 1."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    write_image(tmp_path / "a.png", _image(24, 32))
    out = os.fsencode(tmp_path) + b"/out\xff"
    result = subprocess.run([sys.executable, "-m", "runtime", str(tmp_path / "a.png"), "--model", str(tiny_weights),
                             "-o", os.fsdecode(out), "-q"], capture_output=True,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().strip().endswith("out\\xff") and os.path.exists(out + b"/a.png")


def test_names_differing_only_by_case_collide_where_the_filesystem_ignores_case(tmp_path, tiny_weights, capsys,
                                                                              monkeypatch):
    """d1/IMG.png and d2/img.png written into one folder of a filesystem that ignores case (macOS's, Windows', a FAT
    card): the second would silently replace the first. Where case counts (here) both are written."""
    import runtime.cli

    for folder, name in (("d1", "IMG.png"), ("d2", "img.png")):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / name, _image(24, 32))
    argv = [str(tmp_path / "d1" / "IMG.png"), str(tmp_path / "d2" / "img.png"), "--model", str(tiny_weights), "-q"]
    assert not runtime.cli.case_insensitive(tmp_path)
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG.png", "img.png"]
    capsys.readouterr()
    monkeypatch.setattr(runtime.cli, "case_insensitive", lambda folder: True)
    assert main([*argv, "-o", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "IMG.png and " in err and "img.png would both be written to" in err
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").iterdir())


def test_a_limit_below_one_pixel_and_a_model_of_no_known_kind_are_said_in_command_line_terms(tmp_path, capsys):
    write_image(tmp_path / "a.png", _image(24, 32))
    with pytest.raises(SystemExit) as exit_:  # was "max_pixels must be a positive whole number ..., got 0"
        main([str(tmp_path / "a.png"), "--max-megapixels", "1e-9", "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--max-megapixels: must be at least one pixel (1e-6 megapixels), got 1e-9" in capsys.readouterr().err
    assert main([str(tmp_path / "a.png"), "--model", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]) == 2
    assert "name the backend (backend=, --backend: one of torch, onnxruntime" in capsys.readouterr().err


@pytest.mark.parametrize("value, why", [("-1", "must be at least 0"), ("100000", "at most the"), ("x", "whole number")])
def test_a_thread_count_that_cannot_work_is_a_usage_error(tmp_path, capsys, value, why):
    with pytest.raises(SystemExit) as stopped:  # before: -1 reached Deblurrer (exit 1), 100000 reached the backend
        main([str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), "--threads", value])
    assert stopped.value.code == 2 and why in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["image", "video"])
def test_an_output_written_by_another_run_meanwhile_is_kept_without_force(tmp_path, tiny_weights, capsys,
                                                                          monkeypatch, kind):
    """Two runs into one folder, no --force: the outputs were checked once, at the start, and the later run's
    rename replaced what the other had written since (a grey 955-byte result became another photo's), exit 0."""
    import runtime

    if kind == "image":
        source, target = tmp_path / "p19.png", tmp_path / "out" / "p19.png"
        write_image(source, _image())
    else:
        source, target = tmp_path / "clip.avi", tmp_path / "out" / "clip.mp4"
        writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
        for i in range(3):
            writer.write(_image(32, 48, seed=i))
        writer.release()
    real = runtime.Deblurrer

    class OtherRunMeanwhile(real):  # the other run writes the same output while this one works
        def deblur(self, image, rgb=None):
            if not target.exists():
                target.write_bytes(b"the other run's output")
            return super().deblur(image, rgb)

        __call__ = deblur

    monkeypatch.setattr(runtime, "Deblurrer", OtherRunMeanwhile)
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err
    assert "written by another run while this one worked" in err and "--force" in err
    assert target.read_bytes() == b"the other run's output"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary file left


def test_a_killed_run_s_temporary_video_is_not_read_as_a_clip(tmp_path, tiny_weights, capsys):
    """``kill -9`` of a video run left clip.mp4.partial.mp4; a later run over that folder took it as an input
    ("not a video FFmpeg can open", deblurred 0 of 1). It is counted with the other files instead."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "clip.mp4.partial.mp4").write_bytes(b"half a video")
    write_image(folder / "a.png", _image())
    assert main([str(folder), "-o", str(tmp_path / "again"), "--model", str(tiny_weights), "-q"]) == 0
    assert "deblurred 1 of 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["a.png"]


def test_a_refused_run_leaves_no_empty_output_folder(tmp_path, tiny_weights):
    """Round 17: ``-o new/sub`` with a model or option refused after the folder was made left ``new/sub`` behind."""
    import subprocess
    import sys
    from pathlib import Path

    write_image(tmp_path / "a.png", _image(24, 32))
    done = subprocess.run([sys.executable, "-m", "runtime", str(tmp_path / "a.png"), "--model", str(tiny_weights),
                           "--tile", "3", "-o", str(tmp_path / "new" / "sub"), "-q"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "tile must be a multiple of 2" in done.stderr
    assert not (tmp_path / "new").exists()
