"""PyTorch's reference outputs of an export's parity sweep, kept on disk so that the next sweep of the same network
on the same inputs reads them instead of running PyTorch again.

``build_trt.py --fp16`` exports the FP16 ONNX and checks it against FP32 PyTorch on the same eight photo shapes the
FP32 export was just checked on; re-exporting with ``--force`` does it again. PyTorch is the slow half of each
sweep (720x1280 alone takes ~9 s on two CPU cores), and its output for a given network and input never changes.

An entry is found only by what decides PyTorch's output, hashed: every parameter and buffer of the network (names,
dtypes, shapes and bytes: never a file name or a recorded checksum, which an in-memory model may not have), the
source of the modules that compute it (``banet/model.py``, ``banet/pooling.py``), the PyTorch version, and the
input's bytes. A file that does not load as the expected float32 array is ignored and computed again. The folder
(``<cache>/parity_reference``, :func:`banet.paths.cache_dir`) keeps the :data:`KEEP` most recently used entries.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from banet.outputs import write_atomic
from banet.paths import cache_dir

log = logging.getLogger(__name__)

#: Entries kept (least recently used dropped): eight sweep shapes of four networks; ~15 MB a network.
KEEP = 32
#: The modules whose code computes the reference (their source is part of every key).
_MODEL_SOURCES = ("model.py", "pooling.py")


def network_identity(model: nn.Module) -> str:
    """A digest of everything that decides ``model``'s output on the CPU besides its input."""
    digest = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    package = Path(__file__).resolve().parent.parent / "banet"
    for name in _MODEL_SOURCES:
        digest.update((package / name).read_bytes())
    for name, tensor in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {value.dtype} {tuple(value.shape)}\n".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def cached_forward(forward, model: nn.Module, folder: Path | None = None):
    """``forward`` (NCHW float32 -> NCHW float32) with its outputs kept in ``folder`` (default: the cache's
    ``parity_reference``) under the network's identity and the input's bytes."""
    folder = Path(folder) if folder is not None else cache_dir() / "parity_reference"
    identity = network_identity(model)

    def run(x: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(f"{identity} {x.dtype} {x.shape}\n".encode() + np.ascontiguousarray(x).tobytes())
        path = folder / f"{key.hexdigest()}.npy"
        expected = (x.shape[0], 3, *x.shape[2:])
        found = _load(path, expected)
        if found is not None:
            log.debug("PyTorch reference for %s read from %s", "x".join(map(str, x.shape)), path)
            return found
        out = forward(x)
        _store(path, out, folder)
        return out

    return run


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array at ``path`` if it is a float32 array of ``shape`` (its use recorded for pruning), else None."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.dtype != np.float32 or array.shape != shape or not np.isfinite(array).all():
        log.info("ignoring a cached PyTorch reference that does not fit (%s): computing it again", path)
        return None
    try:
        path.touch()
    except OSError:
        pass
    return array


def _store(path: Path, out: np.ndarray, folder: Path) -> None:
    """Keep ``out`` at ``path`` and drop the least recently used entries past :data:`KEEP`; a cache that cannot
    be written only costs the next sweep its time (logged, never an error)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(out, dtype=np.float32), allow_pickle=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
        entries = sorted(folder.glob("*.npy"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.info("could not keep the PyTorch reference in %s (%s); the next sweep computes it again", folder, exc)
