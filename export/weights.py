"""The checkpoint an export starts from, refused when its tensors cannot be a trained network's.

:func:`banet.checkpoint.load_checkpoint` copies a state_dict into the network with ``load_state_dict``, which casts
whatever it is given to the network's float32: a file of integer or boolean tensors (a wrong ``save_file`` call,
quantized or mask tensors under the right names) would load, export and verify (PyTorch and ONNX Runtime agree on
the same garbage). A NaN or Inf weight fails the parity sweep, but as "the graph does not match PyTorch", which
points at the exporter instead of the file. Every export of a checkpoint goes through :func:`load_for_export`, so
these files are refused in one line naming the tensors, before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from banet.checkpoint import CheckpointFormatError, LoadedCheckpoint, load_checkpoint, read_state_dict

#: How many offending tensor names a message lists.
_SHOWN = 6


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def load_for_export(path: str | os.PathLike) -> LoadedCheckpoint:
    """:func:`~banet.checkpoint.load_checkpoint`, after refusing (``CheckpointFormatError``, one line) keys that
    are not strings, and tensors that are not floating point, or hold NaN or Inf, where the network has floats."""
    path = Path(path)
    state, _, _ = read_state_dict(path)  # every layout and file error of the loader, in its words
    odd_keys = [repr(k) for k in state if not isinstance(k, str)]
    if odd_keys:
        raise CheckpointFormatError(f"{path}: not a state_dict: keys that are not parameter names: "
                                    f"{_names(odd_keys)}")
    loaded = load_checkpoint(path)
    expected = loaded.model.state_dict()
    not_float = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
                 if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if not_float:
        raise CheckpointFormatError(f"{path}: {len(not_float)} tensor(s) are not floating point, so they are not "
                                    f"trained weights (loading would cast them silently): {_names(not_float)}")
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointFormatError(f"{path}: {len(not_finite)} tensor(s) hold NaN or Inf values (a diverged or "
                                    f"corrupt training run): {_names(not_finite)}")
    return loaded
