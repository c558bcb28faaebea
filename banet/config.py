"""The configuration of a BANet network: how many blur-aware modules, how wide, which BA variant.

A configuration is stored with every checkpoint we write and inferred from the state_dict shapes when a
checkpoint from the authors' code carries none (see ``banet.checkpoint``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class BANetConfig:
    """Shape of a BANet network.

    Attributes:
        num_bams: number of blur-aware modules (the paper uses 4, 8, 10 and 12; the released model 10).
        dim_1: width of the full-resolution encoder/decoder features (64 in the paper).
        dim_2: width of the half-resolution features inside the BAMs (128 in BANet, 192 in BANet+).
        ba_fuse_full: BANet+ layout, where BA's 1x1 ``fuse_conv`` maps to ``dim_2`` channels instead of
            ``dim_2 / 2`` (and ``conv_final`` is then ``dim_2 -> dim_2``).
    """

    num_bams: int = 10
    dim_1: int = 64
    dim_2: int = 128
    ba_fuse_full: bool = False

    def __post_init__(self) -> None:
        if self.num_bams < 1:
            raise ValueError(f"num_bams must be >= 1, got {self.num_bams}")
        if self.dim_1 < 1 or self.dim_2 < 2 or self.dim_2 % 2:
            raise ValueError(f"dim_1 must be >= 1 and dim_2 an even number >= 2, got {self.dim_1}/{self.dim_2}")

    @property
    def half_width(self) -> int:
        """``dim_2 / 2``: width of each CPDC branch and of BA's strip-pooling features."""
        return self.dim_2 // 2

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> BANetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BANet configuration fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> BANetConfig:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """Human-readable one-liner, e.g. ``BANet stack-10, widths 64/128``."""
        family = "BANet+" if self.ba_fuse_full else "BANet"
        return f"{family} stack-{self.num_bams}, widths {self.dim_1}/{self.dim_2}"


#: The authors' released network (``BANet_GoPro.pth``): 17,988,547 parameters.
FULL = BANetConfig()
#: BANet+ from the journal version (inner width 192, full-width BA fusion).
PLUS = BANetConfig(num_bams=10, dim_1=64, dim_2=192, ba_fuse_full=True)


#: Peak bytes of working memory per input pixel, per channel of width (see :func:`activation_bytes_per_pixel`).
_BYTES_PER_PIXEL_PER_CHANNEL = 28


def activation_bytes_per_pixel(config: BANetConfig) -> int:
    """Estimated peak working memory of one forward pass per input pixel, in bytes.

    Full-resolution features have ``dim_1`` channels, half-resolution ones ``dim_2`` (a quarter of the pixels);
    28 bytes per pixel per channel (1.3 KB/pixel for the default network, stack-4 32/64) is about its measured
    peaks: ONNX Runtime CPU without its memory arena 1.3 KB/pixel (966x964), with the shared arena the runtime uses
    since 2026-12-06 about 1.4 KB/pixel (FP32, 774x694: ``python -m benchmarks.ort_memory --sizes 774x694``, less
    the process's ~95 MB), PyTorch CPU 0.85 KB/pixel (1024x1024). ``python -m benchmarks.memory`` and
    ``benchmarks.end_to_end`` re-measure whole photos.
    """
    return _BYTES_PER_PIXEL_PER_CHANNEL * (config.dim_1 + config.dim_2 // 4)
