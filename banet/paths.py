"""Where banet-deploy keeps files it makes on its own (caches), chosen from the environment, never from where
the package is installed."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BANET_CACHE``, else ``~/.cache/banet-deploy``: TensorRT for RTX runtime caches, ONNX exported on the fly."""
    return Path(os.environ.get("BANET_CACHE", Path.home() / ".cache" / "banet-deploy"))
