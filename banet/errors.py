"""The errors every layer raises about user-supplied files, defined once at the bottom so the runtime can catch
them without importing the model (torch) or ONNX code that raises them."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


class CheckpointFormatError(CheckpointError):
    """The file is not a readable checkpoint: truncated, another kind of file, or unsafe pickled objects."""


class CheckpointMismatchError(CheckpointError):
    """The tensors do not fit the network: missing or unexpected keys, or wrong shapes."""

    def __init__(self, message: str, missing: list[str] = (), unexpected: list[str] = (),
                 shape_mismatches: dict[str, tuple] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatches = dict(shape_mismatches or {})


class ArtifactError(ValueError):
    """A file that is not a usable BANet artifact: unreadable, truncated, foreign, or without our metadata."""


class OptionError(TypeError, ValueError):
    """An option of the wrong type or value (``memory_budget_mb='768'``, ``threads='x'``, ``model=5``), refused
    before any work; catchable as ``TypeError`` or ``ValueError``."""


class DeblurrerClosedError(RuntimeError):
    """A ``Deblurrer`` (or its backend) used after ``close()``; a ``RuntimeError``, as it was before it had a name."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libraries' run over several), or its type's name."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
