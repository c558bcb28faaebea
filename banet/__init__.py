"""BANet: the network, its conventions, checkpoint I/O and the one pre/post-processing implementation."""

from banet.checkpoint import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from banet.config import FULL, PLUS, BANetConfig
from banet.conventions import BANET, Conventions
from banet.model import BANet, count_parameters

__all__ = [
    "BANET", "FULL", "PLUS", "BANet", "BANetConfig", "CheckpointError", "CheckpointFormatError",
    "CheckpointMismatchError", "CheckpointNotFoundError", "Conventions", "LoadedCheckpoint", "count_parameters",
    "load_checkpoint", "save_checkpoint",
]
