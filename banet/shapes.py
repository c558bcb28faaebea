"""The one parser of sizes and shapes typed by users: height before width everywhere (``HxW``, ``NxHxW``), as the
tensors are laid out (NCHW). Errors are :class:`ShapeError`, which argparse prints as its message."""

from __future__ import annotations

import argparse
import re


class ShapeError(argparse.ArgumentTypeError, ValueError):
    """A size or shape that does not parse; the message shows the expected form."""


def parse_hw(text: str, square_from_one: bool = False) -> tuple[int, int]:
    """``"720x1280"`` -> (720, 1280); with ``square_from_one``, ``"256"`` -> (256, 256) too."""
    match = re.fullmatch(r"(\d+)(?:[xX](\d+))?", str(text).strip())
    if not match or (match.group(2) is None and not square_from_one):
        example = "HxW such as 720x1280" + (" (or one number for a square)" if square_from_one else "")
        raise ShapeError(f"expected {example}, got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def parse_nhw(text: str) -> tuple[int, int, int]:
    """``"NxHxW"``, ``"HxW"`` (batch 1) or ``"Nx3xHxW"`` -> (N, H, W)."""
    parts = str(text).lower().replace(",", "x").split("x")
    if not all(p.strip().isdigit() for p in parts) or len(parts) not in (2, 3, 4):
        raise ShapeError(f"expected a shape NxHxW, HxW or Nx3xHxW such as 1x720x1280, got {text!r}")
    values = [int(p) for p in parts]
    if len(values) == 4:
        if values[1] != 3:
            raise ShapeError(f"{text!r}: BANet takes 3 channels, got {values[1]}")
        values = [values[0], values[2], values[3]]
    if len(values) == 2:
        values = [1, *values]
    return values[0], values[1], values[2]


def hw_text(height: int, width: int) -> str:
    """(720, 1280) -> ``"720x1280"``: how sizes are written in results and messages."""
    return f"{height}x{width}"
