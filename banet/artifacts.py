"""One owner of where artifacts live and what they are called: ONNX files, INT8 Q/DQ files and engines.

Files go under :func:`engines_dir`: ``$BANET_ENGINES`` if set; else, when the code runs from a source checkout
(a folder with ``pyproject.toml`` and ``.git`` above ``banet/``), that checkout's ``engines/``, whatever the
current folder (so a command run from elsewhere finds the main job's files instead of re-exporting into a new
``./engines``); else (an installed package) ``engines/`` in the current folder, never inside site-packages.
Names derive from the weights' file stem; options that change what a file is give it a different name, so a
variant never replaces the default file the other commands read::

    <stem>.onnx  <stem>_fp16.onnx  <stem>_<H>x<W>_b<N>[_fp16].onnx   exported (export/to_onnx.py)
    <stem>_slim[_fp16].onnx                                          exported with --simplify
    <stem>_int8_ort.onnx  <stem>_int8_trt.onnx                       quantized (calibration.quantize)
    <stem>_int8_<flavour>_<variant>.onnx                             other exclusions / method (quantize)
    <stem>_<precision>[_<targets>].engine (+ <name>.json)            built (export/build_trt.py)
    <network stem>_app[_bgr].onnx / .ort (+ .required_operators.config)  app graphs (export/to_app.py)
    <name>.failed.<suffix>                                           refused by a verification, kept to inspect

Whether a file still stands for its weights is :func:`banet.metadata.stale_source` (ONNX) and the engine
manifest's recorded hashes (:mod:`banet.manifest`).
"""

from __future__ import annotations

import os
from pathlib import Path

from banet.outputs import is_partial_name

ENV = "BANET_ENGINES"


def checkout_root() -> Path | None:
    """The source checkout this code runs from (``pyproject.toml`` and ``.git`` above ``banet/``), or None when it
    runs from an installed package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / ".git").exists() else None


def engines_dir() -> Path:
    """``$BANET_ENGINES``; else the checkout's ``engines/`` when run from one; else ``./engines``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    root = checkout_root()
    return root / "engines" if root is not None else Path("engines")


def engines_rule() -> str:
    """One line saying which engines folder the commands use and why (printed by the commands that write there)."""
    if os.environ.get(ENV):
        return f"engines folder {engines_dir()} (${ENV})"
    if checkout_root() is not None:
        return f"engines folder {engines_dir()} (this checkout's; set ${ENV} to use another)"
    return f"engines folder {engines_dir().resolve()} (the current folder's; set ${ENV} to use another)"


def onnx_path(stem: str, precision: str = "fp32", static_hw: tuple[int, int] | None = None,
              batch: int | None = None, folder: Path | None = None, simplified: bool = False, *,
              sizes: tuple[int, int] | None = None, exporter: str = "torchscript", folded: bool = True) -> Path:
    """An exported ONNX: ``<stem>[_<H>x<W>_b<N> | _b<N>][_<min>-<max>px][_dynamo][_unfolded][_slim][_<precision>]
    .onnx`` (fp32 carries no suffix). Every export that differs from the default one (a fixed shape or batch,
    other declared ``sizes``, another ``exporter``, the attention not folded) has its own name: the default
    name is what the build, quantization and runtime commands read, which a batch-3 graph would break."""
    name = stem
    if static_hw:
        name += f"_{static_hw[0]}x{static_hw[1]}_b{batch or 1}"
    elif batch is not None:
        name += f"_b{batch}"
    if sizes is not None and not static_hw:
        name += f"_{sizes[0]}-{sizes[1]}px"
    if exporter != "torchscript":
        name += f"_{exporter}"
    if not folded:
        name += "_unfolded"
    if simplified:
        name += "_slim"
    if precision != "fp32":
        name += f"_{precision}"
    return (folder or engines_dir()) / f"{name}.onnx"


def int8_onnx_path(fp32_onnx: Path, flavour: str, variant: str = "") -> Path:
    """The INT8 Q/DQ file made from ``fp32_onnx``, next to it: ``<stem>_int8_<flavour>[_<variant>].onnx`` (a variant:
    exclusions or calibration other than the defaults the drift report and benchmarks read)."""
    suffix = f"_{variant}" if variant else ""
    return Path(fp32_onnx).with_name(f"{Path(fp32_onnx).stem}_int8_{flavour}{suffix}.onnx")


def int8_onnx_files(fp32_onnx: Path) -> list[Path]:
    """Every INT8 Q/DQ file made from ``fp32_onnx`` beside it (each flavour and variant, :func:`int8_onnx_path`),
    sorted; neither refused files (:func:`is_failed`), files still being written (or left by a killed run:
    :func:`banet.outputs.is_partial_name`) nor the app graphs made from them (:func:`app_path`)."""
    fp32_onnx = Path(fp32_onnx)
    found = fp32_onnx.parent.glob(f"{fp32_onnx.stem}_int8_*.onnx")
    return sorted(p for p in found if not is_failed(p) and not is_app_graph_name(p) and not is_partial_name(p))


def engine_path(stem: str, precision: str, targets: tuple[str, ...] = (), folder: Path | None = None) -> Path:
    """``<stem>_<precision>[_<targets>].engine`` (the name the benchmarks look for)."""
    suffix = ("_" + "-".join(targets)) if targets else ""
    return (folder or engines_dir()) / f"{stem}_{precision}{suffix}.engine"


def app_path(network_onnx: Path, channel_order: str = "RGB", suffix: str = ".onnx") -> Path:
    """The app graph made from ``network_onnx``, next to it: ``<stem>_app[_bgr]<suffix>`` (``.onnx`` or ``.ort``)."""
    order = "" if channel_order.upper() == "RGB" else "_" + channel_order.lower()
    return Path(network_onnx).with_name(f"{Path(network_onnx).stem}_app{order}{suffix}")


def is_app_graph_name(path: Path) -> bool:
    """Whether ``path`` is named as an app graph (:func:`app_path`: ``<stem>_app[_<channel order>]``)."""
    stem = Path(path).stem
    return stem.endswith("_app") or any(stem.endswith(f"_app_{order}") for order in ("bgr", "rgb"))


def failed_path(path: Path) -> Path:
    """Where a file refused by its verification is kept for inspection: ``<name>.failed<suffix>``."""
    path = Path(path)
    return path.with_name(path.stem + ".failed" + path.suffix)


def is_failed(path: Path) -> bool:
    """Whether ``path`` is a refused file (:func:`failed_path`), which no tool should pick up as an artifact."""
    return Path(path).stem.endswith(".failed")
