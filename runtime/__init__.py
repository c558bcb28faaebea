"""The runtime apps embed: ``from runtime import Deblurrer`` (and the errors it raises, to catch them by name).

The names are loaded when first used (PEP 562): ``python -m runtime`` imports this package before its
``__main__``, so importing NumPy and the Deblurrer here put the command's first 0.2 s outside its Ctrl-C handling
(a KeyboardInterrupt traceback, the process killed by the signal); ``runtime.images`` and the other modules no
longer pay for the Deblurrer either."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and editors; at run time :func:`__getattr__` loads them
    from banet.errors import ArtifactError, CheckpointError, DeblurrerClosedError, OptionError
    from banet.processing import ImageFormatError, NonFiniteOutputError
    from runtime.backends.base import BackendUnavailableError, IncompatibleArtifactError
    from runtime.deblurrer import Deblurrer
    from runtime.images import ImageReadError, ImageWriteError
    from runtime.loading import ModelNotFoundError

#: Each public name and the module that defines it.
_HOMES = {
    "ArtifactError": "banet.errors", "CheckpointError": "banet.errors", "DeblurrerClosedError": "banet.errors",
    "OptionError": "banet.errors", "ImageFormatError": "banet.processing", "NonFiniteOutputError": "banet.processing",
    "BackendUnavailableError": "runtime.backends.base", "IncompatibleArtifactError": "runtime.backends.base",
    "Deblurrer": "runtime.deblurrer", "ImageReadError": "runtime.images", "ImageWriteError": "runtime.images",
    "ModelNotFoundError": "runtime.loading",
}

__all__ = ["ArtifactError", "BackendUnavailableError", "CheckpointError", "Deblurrer", "DeblurrerClosedError",
           "ImageFormatError", "ImageReadError", "ImageWriteError", "IncompatibleArtifactError", "ModelNotFoundError",
           "NonFiniteOutputError", "OptionError"]


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
