"""The embedded default model: what every command uses when no ``--weights`` is given.

It is *not* the authors' GoPro model (those weights cannot be downloaded here): it is a small BANet trained
by ``training/train.py`` on synthetic motion blur of real photographs. Its file records how it was trained.
"""

from __future__ import annotations

from pathlib import Path

from banet.config import BANetConfig

#: Small enough to train on 2 CPU cores, same module tree as the released network.
DEFAULT_CONFIG = BANetConfig(num_bams=4, dim_1=32, dim_2=64)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "banet_default.safetensors"


def default_weights_path() -> Path:
    """Path of the embedded default checkpoint; a clear error if the package was installed without it."""
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the embedded default weights are missing ({DEFAULT_WEIGHTS}); reinstall banet-deploy from the "
            "repository or pass --weights with a checkpoint")
    return DEFAULT_WEIGHTS
