"""Input/output conventions of a BANet network, as data.

These are written into ONNX ``metadata_props`` and engine manifests by the exporters and read back by the
runtime, so no other module re-states them. :mod:`banet.processing` is the one implementation that applies
them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

METADATA_PREFIX = "banet."


@dataclass(frozen=True)
class Conventions:
    """How pixels map to network inputs and back.

    Attributes:
        channel_order: order of colour channels the network was trained on ("BGR": OpenCV's order).
        offset: added after scaling pixels to [0, 1] (network input = pixel01 + offset).
        clamp_min, clamp_max: network output is clamped to this range, then ``-offset`` gives [0, 1].
        size_multiple: height and width must be multiples of this (one stride-2 down/up stage -> 2).
        pad_mode: how images are padded up to the multiple before inference ("reflect").
        layout: tensor layout of the network input/output.
    """

    channel_order: str = "BGR"
    offset: float = -0.5
    clamp_min: float = -0.5
    clamp_max: float = 0.5
    size_multiple: int = 2
    pad_mode: str = "reflect"
    layout: str = "NCHW"

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` or a JSON manifest."""
        return {METADATA_PREFIX + k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> Conventions:
        """Read conventions back from :meth:`to_metadata` output; a missing key is an error, not a guess."""
        values = {}
        missing = []
        for f in fields(cls):
            key = METADATA_PREFIX + f.name
            if key not in metadata:
                missing.append(key)
                continue
            raw = metadata[key]
            values[f.name] = int(raw) if f.type in ("int", int) else float(raw) if f.type in ("float", float) else raw
        if missing:
            raise KeyError(f"model metadata lacks the BANet conventions {missing}; re-export the model with "
                           "export/to_onnx.py so the runtime does not have to guess them")
        return cls(**values)


#: What the authors' code (and every checkpoint of theirs) uses.
BANET = Conventions()
