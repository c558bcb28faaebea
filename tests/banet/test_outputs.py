"""The shared path rules: refuse to overwrite, refuse folders, fail early on unwritable folders, inputs must exist,
writes are whole or nothing."""

import errno
import os

import pytest

import banet.outputs
from banet.outputs import check_input, check_output, shown_path, write_atomic, write_error


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

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:1])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(banet.outputs, "open", lambda path, mode: Full(open(path, mode)), raising=False)
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
