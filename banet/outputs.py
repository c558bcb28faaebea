"""One rule for every file this toolkit writes: never replace a user's file unless asked, fail before the work.

Exporting, quantizing and building take seconds to minutes; a path that cannot be written should stop the
command before any of that, with a message that names the path, not after it with an ``OSError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def check_output(path: Path, *, force: bool, error: type[Exception], suffix: str,
                 folders: Iterable[Path] = ()) -> None:
    """Raise ``error`` when ``path`` exists (unless ``force``), is a folder, or its folder cannot be written.

    ``suffix`` names the kind of file expected (".onnx", ".engine") for the message about folders; ``folders``
    are other folders the command will write into (caches), checked the same way. Missing folders are created.
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise error(f"{path} is a directory; give a file name ending in {suffix}")
    if path.exists() and not force:
        raise error(f"{path} exists; pass --force to overwrite it")
    for folder in dict.fromkeys([path.parent, *map(Path, folders)]):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        if not os.access(folder, os.W_OK):
            raise error(f"output folder {folder} is not writable")


def shown_path(path: Path | str) -> str:
    """A path as a user types it and as committed reports show it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
