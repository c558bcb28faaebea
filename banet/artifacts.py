"""One owner of where artifacts live and what they are called: ONNX files, INT8 Q/DQ files and engines.

Files go under :func:`engines_dir`: ``$BANET_ENGINES`` if set, else ``engines/`` in the current folder (the
project the user runs the commands from), never next to the installed package, so an editable and a
non-editable install behave the same. Names derive from the weights' file stem::

    <stem>.onnx  <stem>_fp16.onnx  <stem>_<H>x<W>_b<N>[_fp16].onnx   exported (export/to_onnx.py)
    <stem>_int8_ort.onnx  <stem>_int8_trt.onnx                       quantized (calibration.quantize)
    <stem>_<precision>[_<targets>].engine (+ .manifest.json)         built (export/build_trt.py)
    <name>.failed.<suffix>                                           refused by a verification, kept to inspect

Whether a file still stands for its weights is :func:`banet.metadata.stale_source` (ONNX) and the engine
manifest's recorded hashes (:mod:`banet.manifest`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "BANET_ENGINES"


def engines_dir() -> Path:
    """``$BANET_ENGINES``, else ``./engines``."""
    return Path(os.environ.get(ENV) or "engines")


def onnx_path(stem: str, precision: str = "fp32", static_hw: tuple[int, int] | None = None,
              batch: int | None = None, folder: Path | None = None) -> Path:
    """An exported ONNX: ``<stem>[_<H>x<W>_b<N>][_<precision>].onnx`` (fp32 carries no suffix)."""
    name = stem
    if static_hw:
        name += f"_{static_hw[0]}x{static_hw[1]}_b{batch or 1}"
    if precision != "fp32":
        name += f"_{precision}"
    return (folder or engines_dir()) / f"{name}.onnx"


def int8_onnx_path(fp32_onnx: Path, flavour: str) -> Path:
    """The INT8 Q/DQ file made from ``fp32_onnx``, next to it: ``<stem>_int8_<flavour>.onnx``."""
    return Path(fp32_onnx).with_name(f"{Path(fp32_onnx).stem}_int8_{flavour}.onnx")


def engine_path(stem: str, precision: str, targets: tuple[str, ...] = (), folder: Path | None = None) -> Path:
    """``<stem>_<precision>[_<targets>].engine`` (the name the benchmarks look for)."""
    suffix = ("_" + "-".join(targets)) if targets else ""
    return (folder or engines_dir()) / f"{stem}_{precision}{suffix}.engine"


def failed_path(path: Path) -> Path:
    """Where a file refused by its verification is kept for inspection: ``<name>.failed<suffix>``."""
    path = Path(path)
    return path.with_name(path.stem + ".failed" + path.suffix)


def is_failed(path: Path) -> bool:
    """Whether ``path`` is a refused file (:func:`failed_path`), which no tool should pick up as an artifact."""
    return Path(path).stem.endswith(".failed")
