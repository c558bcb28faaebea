"""argparse ``type`` helpers every command line shares, so that one rule refuses one kind of bad number."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from banet.machine import usable_cpus


def _shown(text: str) -> str:
    """``text`` as a one-line, printable excerpt for an error message (control characters escaped)."""
    shown = text.encode("ascii", "backslashreplace").decode().replace("\n", "\\n").replace("\r", "\\r")
    return shown if len(shown) <= 64 else shown[:61] + "..."


def number(kind: type, low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite ``kind`` (int or float) in [low, high] (``low_open``: above ``low``), refused
    on the command line (exit 2) before any work."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got "
                                             f"{_shown(text)!r}") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            bound = f"above {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}{'' if high == math.inf else f' and at most {high:g}'}"
                                             f", got {_shown(text)}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def threads(low: int = 1) -> Callable[[str], int]:
    """An argparse ``type`` for a CPU thread count: ``low`` (0 where the option takes it for "all cores") up to the
    CPUs this process may use (:func:`banet.machine.usable_cpus`): PyTorch crashed, a segmentation fault, when asked
    for 100000, and more threads than CPUs only contend for them."""

    def parse(text: str) -> int:
        cpus = usable_cpus()
        try:
            return number(int, low, cpus)(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (at most the {cpus} CPU(s) this process may use"
                                             + ("; 0: all of them)" if low == 0 else ")")) from None

    parse.__name__ = "int"
    return parse


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a file or folder: an empty one is refused. ``Path("")`` is the working folder, so an
    unset shell variable (``--repository "$REPO"``) would otherwise write into wherever the command ran."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({text!r}; an unset shell variable?)")
    return Path(text)


path_arg.__name__ = "path"
