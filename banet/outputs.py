"""One rule for every file this toolkit reads or writes: fail before the work, in one line, and never leave a
user's file half replaced.

Exporting, quantizing and building take seconds to minutes; a path that cannot be read or written should stop
the command before any of that, with a message that names the path, not after it with an ``OSError``. Inputs
must exist (:func:`check_input`: a mistyped name is refused, never created); outputs are never replaced unless
asked (:func:`check_output`), never one of the files the command reads, even with ``--force``
(:func:`check_not_input`: the same file under a link or another spelling too), and are written whole or not at
all (:func:`write_atomic`), with one line for a write that fails (:func:`write_error`, e.g. a full disk). Two
runs writing one output at once are refused, the second in one line (:func:`output_lock`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

#: Suffix :func:`write_atomic` adds to a file's name while it is being written.
PARTIAL = ".partial"
#: Longest file name (in bytes) the common file systems accept (ext4, APFS, NTFS, tmpfs).
NAME_MAX = 255


def is_partial_name(name: str | Path) -> bool:
    """Whether ``name`` is a temporary name of :func:`partial_path` (``x.png.partial``, ``clip.mp4.partial.mp4``,
    ``m_int8_ort.partial.onnx``): a file still being written, or left by a killed run, never an artifact or an
    input to pick up (a killed quantization's file was benchmarked as a system; a killed video's read as a clip)."""
    name = Path(name).name
    return name.endswith(PARTIAL) or Path(name).stem.endswith(PARTIAL)


def partial_path(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary sibling ``path`` is written under: ``<name>.partial`` (``<name>.partial<suffix>`` with
    ``keep_suffix``, for writers that pick the format from the extension).

    A name already near the file-system limit would not fit with the tail added, so it becomes a digest of the
    name instead: a 254-character file name can still be written.
    """
    path = Path(path)
    tail = PARTIAL + (path.suffix if keep_suffix else "")
    name = path.name + tail
    if len(os.fsencode(name)) > NAME_MAX:
        name = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16] + tail
    return path.with_name(name)


def _where(path: Path) -> str:
    """Where ``path`` leads: resolved (links followed, ``..`` and ``.`` gone) as far as it exists, then as typed."""
    try:
        return os.path.normcase(Path(path).resolve())
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return os.path.normcase(os.path.abspath(path))


def real_path(path: Path | str) -> Path:
    """``path`` with every link followed, as ``Path.resolve()``, but a link that points at itself (or a loop of
    them) is returned as far as it resolves instead of raising ``RuntimeError`` (Python 3.11-3.12): one such
    file among a folder's inputs stopped the whole command."""
    return Path(os.path.realpath(path))


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether ``a`` and ``b`` name one file: when both exist, :func:`os.path.samefile` (links, other spellings,
    hard links); otherwise where they lead (:func:`_where`), so an output that does not exist yet is compared with
    another file the command will write too."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet), or a name the system refuses
        return _where(Path(a)) == _where(Path(b))


#: Files a command reads (or writes besides the one checked): what each is, as the refusal names it, to its path
#: (None: not given, skipped); a mapping, or (what, path) pairs where several files are the same kind.
Files = Mapping[str, "Path | str | None"] | Iterable[tuple[str, "Path | str | None"]]


def check_not_input(path: Path, inputs: Files, *, error: type[Exception], option: str = "") -> None:
    """Raise ``error`` (one line naming both paths) when the file ``path`` would be written to is one of
    ``inputs``, a mapping such as ``{"the checkpoint (--weights)": weights}``: refused even with ``--force``, as
    the command would destroy what it reads. ``option`` ("--json") names where ``path`` came from."""
    for what, other in inputs.items() if isinstance(inputs, Mapping) else inputs:
        if other is not None and same_file(path, other):
            raise error(f"{option + ' ' if option else ''}{path} is {what}, {other}; give it its own file name "
                        "(refused even with --force: the command would write over a file it uses)")


def check_output(path: Path, *, force: bool, error: type[Exception], suffix: str,
                 folders: Iterable[Path] = (), inputs: Files | None = None, option: str = "") -> None:
    """Raise ``error`` when ``path`` is one of ``inputs`` (:func:`check_not_input`, even with ``force``), exists
    (unless ``force``), is a folder, or its folder cannot be written.

    ``suffix`` names the kind of file expected (".onnx", ".engine") for the message about folders; ``folders``
    are other folders the command will write into (caches), checked the same way. Missing folders are created
    (:func:`make_folder`: removed at exit if nothing was written there).
    """
    path = Path(path)
    if inputs:
        check_not_input(path, inputs, error=error, option=option)
    if path.exists() and path.is_dir():
        raise error(f"{path} is a directory; give a file name ending in {suffix}")
    if path.exists() and not force:
        raise error(f"{path} exists; pass --force to overwrite it")
    for folder in dict.fromkeys([path.parent, *map(Path, folders)]):
        try:
            make_folder(folder)
        except OSError as exc:
            raise error(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        if not os.access(folder, os.W_OK):
            raise error(f"output folder {folder} is not writable")


#: Folders :func:`make_folder` created in this process, in the order made: those still empty at exit are removed.
_MADE: list[Path] = []


def make_folder(folder: Path) -> None:
    """Create ``folder`` and the missing folders above it, remembering which it made: those still empty when the
    process ends are removed (:func:`remove_empty_made_folders`), so a command refused after its output checks
    (a later option, a missing input, Ctrl-C) leaves no empty folder behind, while one that wrote there keeps it."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    if missing and not _MADE:
        atexit.register(remove_empty_made_folders)
    _MADE.extend(reversed(missing))


def remove_empty_made_folders() -> None:
    """Remove the folders :func:`make_folder` created that are still empty, deepest first (a folder with anything
    in it, a file another process wrote included, is kept: ``rmdir`` refuses it)."""
    while _MADE:
        with contextlib.suppress(OSError):
            _MADE.pop().rmdir()


def check_input(path: Path, *, error: type[Exception], what: str, fix: str = "") -> Path:
    """Raise ``error`` when the file a command reads is missing or is a folder; ``fix`` says how to make it.

    Why here: a command given a mistyped input path must stop, never create something under that name.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.exists():
        raise error(f"{path}: {what} not found{hint}")
    if not path.is_file():
        raise error(f"{path} is a directory, not {what}{hint}")
    return path


#: ``open`` flags that never follow a symbolic link at the last component (0 where the platform has none).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def clear_partial(partial: Path) -> None:
    """Remove whatever entry is at the temporary name ``partial`` (a file a killed run left, or a symbolic link
    someone planted there: only the link is removed, never what it points to), so that the writer creates a new
    file of its own instead of writing through a link, outside the output folder or over an input.

    A folder at that name is not removed: ``IsADirectoryError`` naming it.
    """
    partial = Path(partial)
    if partial.is_dir() and not partial.is_symlink():
        raise IsADirectoryError(errno.EISDIR, f"a folder is in the way of the temporary file {partial}; remove it",
                                str(partial))
    partial.unlink(missing_ok=True)


def create_partial(partial: Path) -> BinaryIO:
    """A new file at the temporary name ``partial``, open for binary writing: whatever was there is cleared
    (:func:`clear_partial`), then the file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so it is never an
    existing file and never reached through a symbolic link; one planted again in between is refused
    (``FileExistsError``) instead of followed. For writers that fill a file object themselves (videos)."""
    partial = Path(partial)
    clear_partial(partial)
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0),
                             0o666)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{partial}: something appeared at this temporary name while it was "
                                            "being created; refusing to write through it", str(partial)) from None
    try:
        return open(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        raise


def write_atomic(path: Path, data: bytes, replace: bool = True) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a synced ``<name>.partial`` renamed over ``path``
    (``replace=False``: linked to ``path`` only where nothing is there, :func:`commit_partial`).

    The partial file is always a new one (:func:`clear_partial`, then created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW``): a symbolic link planted at that name is removed, never written through, and one planted again
    in between makes the write fail (``FileExistsError``) instead of following it. On any failure (a full
    disk...) the partial file is removed and the ``OSError`` re-raised; ``path`` is untouched.
    """
    path = Path(path)
    tmp = partial_path(path)
    ours = None
    try:
        handle = create_partial(tmp)
        ours = entry_id(handle)
        with handle:  # open until renamed: its inode number cannot pass to another run's file meanwhile
            handle.write(data)
            handle.flush()
            commit_partial(tmp, path, replace, ours=ours)
    except BaseException:
        remove_if_ours(tmp, ours)  # an entry planted (or another run's file) meanwhile is not ours to remove
        raise
    return path


def entry_id(where: Path | BinaryIO | int) -> tuple[int, int] | None:
    """(device, inode) of an open file (or descriptor), or of the directory entry ``where`` itself (a link is not
    followed);
    None where there is none. How a writer tells its own temporary file from one another run made under the same
    name after clearing it."""
    try:
        if isinstance(where, int):
            st = os.fstat(where)
        else:
            st = os.fstat(where.fileno()) if hasattr(where, "fileno") else os.lstat(where)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_if_ours(partial: Path, ours: tuple[int, int] | None) -> None:
    """Remove the temporary file ``partial`` if it is still the one this run created (``ours``, its
    :func:`entry_id`): never another run's file written under the same name meanwhile."""
    if ours is not None and entry_id(partial) == ours:
        Path(partial).unlink(missing_ok=True)


def commit_partial(partial: Path, path: Path, replace: bool = True, ours: tuple[int, int] | None = None) -> Path:
    """Make the complete file ``partial`` durable (fsync) and rename it over ``path``, then sync the folder: after
    a crash ``path`` is the old file or the whole new one, never an empty or half-written one. Shared by
    :func:`write_atomic` and writers that fill a file themselves (OpenCV's video writer). A symbolic link found
    at ``partial`` (put there while the file was written) is refused (``OSError``), never renamed into place.

    ``replace=False`` (a command run without ``--force``) puts the file in place only where nothing is at
    ``path`` (a hard link, which the kernel refuses over an existing name): a file that appeared there while this
    one was written (another run writing the same output) is never replaced (``FileExistsError``), where a check
    made at the start would have let the rename replace it without a word.

    ``ours`` (the :func:`entry_id` of the file this run wrote): a different file found at ``partial`` (another run
    writing the same output cleared this one's and began its own) is refused (``FileExistsError``), never renamed
    into place half written."""
    try:
        handle = os.open(partial, os.O_RDWR | _NOFOLLOW)
    except OSError:
        if Path(partial).is_symlink():
            raise OSError(errno.ELOOP, f"{partial} became a symbolic link while it was written; refusing to "
                                       "rename it into place", str(partial)) from None
        if ours is not None and not os.path.lexists(partial):
            raise FileNotFoundError(errno.ENOENT, f"its temporary file {partial} was removed while it was written "
                                                  "(another run writing the same output?)", str(path)) from None
        raise
    try:
        if ours is not None and entry_id(handle) != ours:
            raise FileExistsError(errno.EEXIST, f"its temporary file {partial} was replaced while it was written "
                                                "(another run writing the same output?); not renamed into place",
                                  str(path))
        os.fsync(handle)
    finally:
        os.close(handle)
    if replace:
        os.replace(partial, path)
    else:
        taken = FileExistsError(errno.EEXIST, "written by another run while this one worked (the same output "
                                              "name?); not replaced: pass --force to replace it", str(path))
        try:
            os.link(partial, path, follow_symlinks=False)
        except FileExistsError:
            raise taken from None
        except OSError as exc:  # a file system without hard links (FAT, some network shares): check, then rename
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(path):
                raise taken from None
            os.replace(partial, path)
        else:
            os.unlink(partial)
    sync_folder(Path(path).parent)
    return Path(path)


def write_together(files: dict[Path, bytes]) -> None:
    """Write ``files`` (path -> bytes) as one: each whole under its temporary name first (a new file,
    :func:`create_partial`), then all synced and renamed into place. A failure while writing (a full
    disk) or Ctrl-C removes the temporaries and leaves the files already there untouched; only a rename failing
    between two renames could part them (no file system renames two files at once). Raises ``OSError`` naming the
    file that failed."""
    staged: list[tuple[Path, Path, tuple[int, int] | None]] = []
    current: Path | None = None
    try:
        for current, data in files.items():
            partial = partial_path(current)
            with create_partial(partial) as handle:
                staged.append((partial, current, entry_id(handle)))  # ours from here on: removed on any failure
                handle.write(data)
        for partial, current, ours in staged:
            commit_partial(partial, current, ours=ours)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(current)) from exc
    finally:
        for partial, _, ours in staged:  # committed ones are gone already
            remove_if_ours(partial, ours)


def sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_error(exc: OSError, path: Path, size: int | None = None) -> str:
    """The one line for a write that failed: a full disk says how much was needed and how much is free."""
    if exc.errno == errno.ENOSPC:
        try:
            free = f", {shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB free"
        except OSError:
            free = ""
        needed = f": {size / 1e6:.1f} MB needed{free}" if size is not None else free.replace(", ", ": ", 1)
        return f"no space left on device writing {path}{needed}"
    blocked = file_in_the_way(Path(path))
    if blocked is not None and exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"cannot write {path}: {blocked}"
    return f"cannot write {path}: {exc.strerror or exc}"


def file_in_the_way(path: Path) -> str | None:
    """"<folder> is a file, not a folder" for the nearest folder above ``path`` that exists as something other than
    a folder, or None. Making folders under it fails with EEXIST or ENOTDIR, whose messages name neither path."""
    for parent in Path(path).parents:
        if parent.is_dir():
            return None
        if parent.exists() or parent.is_symlink():
            return f"{parent} is a file, not a folder"
    return None


@contextlib.contextmanager
def removed_on_write_error(partial: Path, target: Path, error: type[Exception]) -> Iterator[None]:
    """Around a write of ``partial`` (a file that becomes ``target`` once complete): an ``OSError`` (a full disk)
    removes ``partial`` and becomes ``error`` with :func:`write_error`'s one line, so nothing half written stays."""
    try:
        yield
    except OSError as exc:
        Path(partial).unlink(missing_ok=True)
        raise error(write_error(exc, target)) from exc


def shown_path(path: Path | str) -> str:
    """A path as a user types it and as committed reports show it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class OutputBusyError(RuntimeError):
    """Another process is writing the same output file right now (:func:`output_lock`)."""


def lock_path(output: str | Path) -> Path:
    """``x.engine`` -> ``x.engine.lock``: held (and present) only while a run writing ``x.engine`` lasts; a digest
    of the name with the same tail where that would be longer than file systems allow (an output name near the
    limit is still writable)."""
    output = Path(output)
    name = output.name + ".lock"
    if len(os.fsencode(name)) > NAME_MAX:
        name = hashlib.sha256(os.fsencode(output.name)).hexdigest()[:16] + ".lock"
    return output.with_name(name)


#: :func:`output_lock`'s refusal; ``{output}`` and ``{pid}`` are filled in.
BUSY_MESSAGE = ("another run is writing {output} (pid {pid}); wait for it to finish, or write to another "
                "--output")


def wait_while_written(output: str | Path, timeout_s: float = 900.0, poll_s: float = 0.2) -> bool:
    """Wait until no other process holds :func:`output_lock` on ``output`` (at most ``timeout_s``); True if one
    did. For files several runs may each make and then share (a checkpoint's cached ONNX export): the second run
    waits for the first's file instead of being refused in a line that names the cache and suggests --output."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(lock_path(output), os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody is writing it
    waited, deadline = False, None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return waited
            except BlockingIOError:
                deadline = deadline or time.monotonic() + timeout_s
                if time.monotonic() > deadline:
                    return waited
                waited = True
                time.sleep(poll_s)
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(output: str | Path, *, error: type[OutputBusyError] = OutputBusyError,
                message: str = BUSY_MESSAGE) -> Iterator[None]:
    """Hold the exclusive right to write ``output`` (and its staged names); ``error`` (one line, ``message`` with
    ``{output}`` and ``{pid}`` filled in) if another process holds it. Every command that stages a file and renames
    it over its output takes it: two runs on one output would otherwise delete or rename each other's staged file.

    An ``flock`` on ``x.ext.lock`` (:func:`lock_path`; released by the kernel if the holder dies, so a killed run
    never leaves a stale lock); the file holds the holder's pid for the message and is removed on release. A lock
    taken on a file that was removed meanwhile is retried, so two runs can never both believe they hold it. Where
    ``fcntl`` is missing (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = lock_path(output)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise error(message.format(output=output, pid=holder)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed that file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # releases the flock
