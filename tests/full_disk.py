"""A file handle on a disk that fills up: the one stand-in the tests give writers for "no space left on device"."""

from __future__ import annotations

import errno


class FullDisk:
    """Wraps ``handle``: writes go through until ``room`` bytes in all have been written, then raise ``ENOSPC``
    (as a full disk does: part of the data may have landed); closing closes the real file, anything else is
    the real file's."""

    def __init__(self, handle, room: int = 0) -> None:
        self.handle, self.room = handle, room

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        if len(data) <= self.room:
            self.room -= len(data)
            return self.handle.write(data)
        self.handle.write(data[:self.room])
        self.room = 0
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):  # fileno, flush...: the real file's
        return getattr(self.handle, name)
