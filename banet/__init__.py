"""BANet: the network, its conventions, checkpoint I/O and the one pre/post-processing implementation.

Names are resolved lazily (PEP 562), so importing a numpy-only submodule (``banet.processing``,
``banet.metadata``...) does not import torch: an app running an ``.onnx`` or ``.engine`` never loads PyTorch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CheckpointError": "banet.checkpoint", "CheckpointFormatError": "banet.checkpoint",
    "CheckpointMismatchError": "banet.checkpoint", "CheckpointNotFoundError": "banet.checkpoint",
    "LoadedCheckpoint": "banet.checkpoint", "load_checkpoint": "banet.checkpoint",
    "save_checkpoint": "banet.checkpoint", "FULL": "banet.config", "PLUS": "banet.config",
    "BANetConfig": "banet.config", "BANET": "banet.conventions", "Conventions": "banet.conventions",
    "BANet": "banet.model", "count_parameters": "banet.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'banet' has no attribute {name!r}")
