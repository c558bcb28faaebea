"""The shared path rules: refuse to overwrite, refuse folders, fail early on unwritable folders, inputs must exist,
writes are whole or nothing."""

import errno
import os
from pathlib import Path

import pytest

import banet.outputs
from banet.outputs import check_input, check_output, shown_path, write_atomic, write_error
from tests.full_disk import FullDisk


class Refused(RuntimeError):
    pass


def test_new_file_in_missing_folder_is_fine_and_folder_is_made(tmp_path):
    target = tmp_path / "a" / "b" / "model.onnx"
    check_output(target, force=False, error=Refused, suffix=".onnx")
    assert target.parent.is_dir()
    assert not target.exists()


def test_existing_file_is_refused_unless_forced(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"user data")
    with pytest.raises(Refused, match="exists; pass --force"):
        check_output(target, force=False, error=Refused, suffix=".onnx")
    check_output(target, force=True, error=Refused, suffix=".onnx")
    assert target.read_bytes() == b"user data"  # checking never touches the file


def test_folder_in_place_of_file_is_refused_even_with_force(tmp_path):
    with pytest.raises(Refused, match="is a directory; give a file name ending in .engine"):
        check_output(tmp_path, force=True, error=Refused, suffix=".engine")


def test_extra_folders_are_checked_too(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(Refused, match="cannot create output folder"):
        check_output(tmp_path / "x.engine", force=False, error=Refused, suffix=".engine",
                     folders=[blocker / "sub"])


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    # Root may write anywhere, so the permission answer is forced for this one folder rather than chmod'ed.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == os.fspath(locked)
                        else real_access(p, mode))
    with pytest.raises(Refused, match=f"output folder {locked} is not writable"):
        check_output(locked / "m.onnx", force=False, error=Refused, suffix=".onnx")


def test_shown_path_is_relative_inside_the_working_folder_and_unchanged_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "engines" / "a.onnx") == os.path.join("engines", "a.onnx")
    assert shown_path("/elsewhere/b.onnx") == "/elsewhere/b.onnx"


def test_inputs_must_exist_and_be_files(tmp_path):
    with pytest.raises(Refused, match=r"mistyped.onnx: ONNX file not found; export it$"):
        check_input(tmp_path / "mistyped.onnx", error=Refused, what="ONNX file", fix="export it")
    with pytest.raises(Refused, match="is a directory, not a checkpoint"):
        check_input(tmp_path, error=Refused, what="a checkpoint")
    (tmp_path / "w.pth").write_bytes(b"x")
    assert check_input(tmp_path / "w.pth", error=Refused, what="a checkpoint") == tmp_path / "w.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # nothing created for the missing one


def test_atomic_write_leaves_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "cache.bin"
    write_atomic(target, b"old")

    monkeypatch.setattr(banet.outputs, "open", lambda path, mode: FullDisk(open(path, mode), room=1), raising=False)
    with pytest.raises(OSError) as info:
        write_atomic(target, b"new data" * 1000)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin"]
    message = write_error(info.value, target, 8000)
    assert message.startswith(f"no space left on device writing {target}: 0.0 MB needed, ") and "MB free" in message
    assert write_error(PermissionError(errno.EACCES, "Permission denied"), target) == \
        f"cannot write {target}: Permission denied"


def test_partial_name_fits_the_file_system_limit(tmp_path):
    from banet.outputs import NAME_MAX, partial_path

    assert partial_path(tmp_path / "a.onnx") == tmp_path / "a.onnx.partial"
    assert partial_path(tmp_path / "clip.mp4", keep_suffix=True) == tmp_path / "clip.mp4.partial.mp4"
    long = tmp_path / ("é" * 120 + ".png")  # 245 bytes in UTF-8: with ".partial" it would not fit
    staged = partial_path(long, keep_suffix=True)
    assert len(staged.name.encode()) <= NAME_MAX and staged.name.endswith(".partial.png")
    assert partial_path(long) != partial_path(tmp_path / ("é" * 119 + "e.png"))  # distinct names stay distinct
    write_atomic(long, b"data")
    assert long.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == [long.name]


def test_atomic_write_never_writes_through_a_link_planted_at_the_partial_name(tmp_path, monkeypatch):
    from banet.outputs import partial_path

    victim, outside = tmp_path / "input.png", tmp_path / "outside"
    victim.write_bytes(b"the user's photo")
    out = tmp_path / "out"
    out.mkdir()
    # Before: open("wb") followed both links, overwriting the input and creating a file outside the output folder.
    (out / "a.png.partial").symlink_to(victim)
    (out / "b.png.partial").symlink_to(outside)
    write_atomic(out / "a.png", b"deblurred a")
    write_atomic(out / "b.png", b"deblurred b")
    assert victim.read_bytes() == b"the user's photo" and not outside.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert not (out / "a.png").is_symlink() and (out / "a.png").read_bytes() == b"deblurred a"
    # A stale partial file (hard-linked to the input) is replaced, not truncated through.
    os.link(victim, out / "c.png.partial")
    write_atomic(out / "c.png", b"deblurred c")
    assert victim.read_bytes() == b"the user's photo" and (out / "c.png").read_bytes() == b"deblurred c"
    # A link planted again between the clean-up and the open: the write fails, nothing is written through it.
    real_clear = banet.outputs.clear_partial

    def clear_then_plant(partial):
        real_clear(partial)
        Path(partial).symlink_to(victim)

    monkeypatch.setattr(banet.outputs, "clear_partial", clear_then_plant)
    with pytest.raises(FileExistsError):
        write_atomic(out / "d.png", b"deblurred d")
    assert victim.read_bytes() == b"the user's photo" and not (out / "d.png").exists()
    assert partial_path(out / "d.png").is_symlink()  # not ours: left for the next clean-up, never followed


def test_atomic_write_refuses_a_folder_at_the_partial_name_in_one_line(tmp_path):
    (tmp_path / "a.png.partial").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        write_atomic(tmp_path / "a.png", b"x")
    assert write_error(info.value, tmp_path / "a.png") == (f"cannot write {tmp_path / 'a.png'}: a folder is in the "
                                                            f"way of the temporary file {tmp_path / 'a.png.partial'}; "
                                                            "remove it")
    assert (tmp_path / "a.png.partial").is_dir() and not (tmp_path / "a.png").exists()


def test_commit_refuses_a_partial_that_became_a_link(tmp_path):
    from banet.outputs import commit_partial

    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "v.mp4.partial.mp4").symlink_to(victim)
    with pytest.raises(OSError, match="became a symbolic link"):
        commit_partial(tmp_path / "v.mp4.partial.mp4", tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists() and victim.read_bytes() == b"keep"


@pytest.mark.parametrize("depth", [1, 2])
def test_a_file_where_a_folder_is_needed_is_named(tmp_path, depth):
    """``--output afile/x.safetensors`` (afile a file) said "File exists", naming neither path."""
    (tmp_path / "afile").write_bytes(b"the user's notes")
    target = tmp_path / "afile" / "sub" / "x.safetensors" if depth == 2 else tmp_path / "afile" / "x.safetensors"
    with pytest.raises(OSError) as info:
        write_atomic(target, b"x")
    assert write_error(info.value, target) == f"cannot write {target}: {tmp_path / 'afile'} is a file, not a folder"
    assert (tmp_path / "afile").read_bytes() == b"the user's notes"


def test_a_missing_folder_is_not_blamed_on_a_file(tmp_path):
    assert banet.outputs.file_in_the_way(tmp_path / "no" / "such" / "x.png") is None
    (tmp_path / "f").write_text("x")
    assert banet.outputs.file_in_the_way(tmp_path / "f" / "x.png") == f"{tmp_path / 'f'} is a file, not a folder"
    assert banet.outputs.file_in_the_way(tmp_path / "x.png") is None


def test_without_replace_a_file_written_meanwhile_is_kept(tmp_path):
    """Two runs into one folder without --force: each checked at its start that the name was free, and the later
    rename replaced the other run's output without a word (both exit 0)."""
    target = tmp_path / "p19.png"
    target.write_bytes(b"the other run's output")
    with pytest.raises(FileExistsError) as info:
        write_atomic(target, b"ours", replace=False)
    assert target.read_bytes() == b"the other run's output" and sorted(os.listdir(tmp_path)) == ["p19.png"]
    assert "written by another run while this one worked" in write_error(info.value, target)
    assert write_atomic(tmp_path / "new.png", b"ours", replace=False).read_bytes() == b"ours"
    assert sorted(os.listdir(tmp_path)) == ["new.png", "p19.png"]  # no partial left beside it


def test_waiting_for_another_writer_of_a_shared_file(tmp_path):
    """Two runtime runs opening one checkpoint on ONNX Runtime: the second was refused ("another run is writing
    <cache>/tiny-....onnx; write to another --output"); it now waits for the first one's export and reuses it."""
    import threading
    import time

    from banet.outputs import output_lock, wait_while_written

    target = tmp_path / "tiny-0123.onnx"
    assert wait_while_written(target) is False  # nobody writing: no wait
    held = threading.Event()

    def writer():
        with output_lock(target):
            held.set()
            time.sleep(0.6)
            target.write_bytes(b"exported")

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    assert wait_while_written(target, poll_s=0.05) is True
    assert time.monotonic() - started > 0.3 and target.read_bytes() == b"exported"
    thread.join()


class _RacedHandle:
    """A temporary file whose write lets another run (``other``) clear it and begin its own under the same name:
    two --force runs writing one output at once."""

    def __init__(self, handle, other):
        self.handle, self.other = handle, other

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)

    def write(self, data):
        self.handle.write(data)
        self.other()


@pytest.mark.parametrize("replace", [True, False])
def test_another_runs_temporary_file_is_never_renamed_into_place(tmp_path, monkeypatch, replace):
    """Two --force runs on one output: the second cleared the first's temporary file and began its own, then the
    first renamed the second's half-written file over the output (and reported success) or, failing, removed it."""
    target = tmp_path / "out.png"
    partial = banet.outputs.partial_path(target)
    theirs = []
    real_create = banet.outputs.create_partial

    def other_run():
        handle = real_create(partial)  # clears ours, as every writer does first
        handle.write(b"half of the other run's")
        handle.flush()
        theirs.append(handle)  # still being written

    monkeypatch.setattr(banet.outputs, "create_partial", lambda p: _RacedHandle(real_create(p), other_run))
    with pytest.raises(OSError, match="was replaced while it was written"):
        write_atomic(target, b"all of this run's image", replace=replace)
    assert not target.exists()
    assert partial.read_bytes() == b"half of the other run's"  # the other run's file is left to it
    theirs[0].close()


def test_a_command_refused_after_its_checks_leaves_no_empty_folder(tmp_path):
    """check_output creates the output's folders before the work; a command refused later (a missing input, a
    later option, Ctrl-C) left them behind, empty. Folders this process made are removed at exit while empty;
    one written into, and folders that were there before, are kept."""
    import subprocess
    import sys

    (tmp_path / "there").mkdir()
    script = (
        "import sys; from pathlib import Path; from banet.outputs import check_output, write_atomic\n"
        "root = Path(sys.argv[1])\n"
        "check_output(root / 'there' / 'new' / 'deeper' / 'r.json', force=False, error=ValueError, suffix='.json')\n"
        "check_output(root / 'kept' / 'r.json', force=False, error=ValueError, suffix='.json',\n"
        "             folders=[root / 'cache' / 'sub'])\n"
        "assert (root / 'there' / 'new' / 'deeper').is_dir() and (root / 'cache' / 'sub').is_dir()\n"
        "write_atomic(root / 'kept' / 'r.json', b'{}')\n"
        "raise SystemExit('error: refused after the checks')\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1 and done.stderr.strip() == "error: refused after the checks"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "there"]
    assert list((tmp_path / "there").iterdir()) == [] and (tmp_path / "kept" / "r.json").read_bytes() == b"{}"
