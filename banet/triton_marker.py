"""The record ``export/to_triton.py`` leaves in every model folder it writes (``to_triton.json``), read back.

Two readers, one format: the writer (``export/triton_repo.py``) tells its own folders from anyone else's, so
``--force`` replaces only what it wrote; the launcher (``serving/triton_server.py``) reads the request limits
the ensemble was written with, so its validating front refuses what the generated configs and the
pre-processing model would refuse, before Triton allocates anything. Standard library and ``banet.shapes`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from banet.shapes import MAX_BATCH

MARKER = "to_triton.json"
TOOL = "export/to_triton.py"
#: Bounds of the limits a repository may be written with (and the launcher accepts). The batch's is the exports'
#: (:data:`banet.shapes.MAX_BATCH`): a larger ``max_batch_size`` would let Triton form batches no artifact takes.
MAX_BATCH_RANGE = (1, MAX_BATCH)
MAX_PIXELS_RANGE = (4, 10**9)  # at least 2x2; at most 1000 megapixels
#: The pixel limit a repository is written with and the servers' fronts enforce unless told otherwise: about
#: 48 megapixels, an 8000x6000 photo. Here, below export and serving, so that both read the one number.
DEFAULT_MAX_PIXELS = 8000 * 6000


class MarkerError(ValueError):
    """A repository without usable limits (the message is meant for the user as is)."""


@dataclass(frozen=True)
class RequestLimits:
    """What the ensemble accepts: images [N, H, W, 3] with N <= max_batch, H, W >= min_side, H*W <= max_pixels."""

    max_batch: int
    max_pixels: int
    min_side: int

    def check(self) -> RequestLimits:
        """Raise :class:`MarkerError` naming the first limit out of its range; return self."""
        for label, value, (low, high) in (("max-batch", self.max_batch, MAX_BATCH_RANGE),
                                          ("max-pixels", self.max_pixels, MAX_PIXELS_RANGE),
                                          ("min-side", self.min_side, (1, 1 << 16))):
            if type(value) is not int or not low <= value <= high:
                raise MarkerError(f"{label} must be an integer from {low} to {high}, got {value!r}")
        return self


def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder`` (a real folder, not a link) if this tool wrote one there, else None."""
    path = folder / MARKER
    if folder.is_symlink() or not folder.is_dir() or path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != TOOL or data.get("model") != folder.name:
        return None
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return data


def marker_text(model: str, ensemble: str, role: str, files: list[str], **extra) -> str:
    """The marker of one model folder: who wrote it, for which ensemble, and every file it holds."""
    return json.dumps({"tool": TOOL, "model": model, "ensemble": ensemble, "role": role, "files": sorted(files),
                       **extra}, indent=1) + "\n"


def ensemble_limits(repository: Path, model: str | None = None) -> tuple[str, RequestLimits]:
    """(ensemble name, its limits) from the markers in ``repository``; ``model`` None: the only ensemble there.

    Raises :class:`MarkerError` if there is no such ensemble (a repository not written by this tool, or by a
    version that recorded no limits), or several and ``model`` is None.
    """
    found = {}
    for folder in sorted(p for p in repository.iterdir() if p.is_dir()) if repository.is_dir() else []:
        data = read_marker(folder)
        if data and data.get("role") == "ensemble" and isinstance(data.get("limits"), dict):
            found[folder.name] = data["limits"]
    if not found:
        raise MarkerError(f"{repository} holds no ensemble written by {TOOL} with request limits ({MARKER}); "
                          f"the launcher serves only such repositories: write one with {TOOL}")
    if model is None:
        if len(found) > 1:
            raise MarkerError(f"{repository} holds several ensembles ({', '.join(sorted(found))}); pick one "
                              "with --model")
        model = next(iter(found))
    if model not in found:
        raise MarkerError(f"{repository} has no ensemble '{model}' written by {TOOL}; it has "
                          f"{', '.join(sorted(found))}")
    raw = found[model]
    try:
        limits = RequestLimits(raw.get("max_batch"), raw.get("max_pixels"), raw.get("min_side")).check()
    except MarkerError as exc:
        raise MarkerError(f"{repository / model / MARKER}: {exc}") from None
    return model, limits
