"""The embedded default model: what every command uses when no ``--weights`` is given, and what to install for it.

It is *not* the authors' GoPro model (those weights cannot be downloaded here): it is a small BANet trained
by ``training/train.py`` on synthetic motion blur of real photographs. Its file records how it was trained.
Its exported FP32 ONNX ships next to it (``banet_default.onnx``, made by ``scripts/refresh_default.sh``, its
metadata recording the sha256 of these weights), so the thin install (no torch) runs the default model too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from banet.config import BANetConfig
from banet.errors import OptionError

#: Small enough to train on 2 CPU cores, same module tree as the released network.
DEFAULT_CONFIG = BANetConfig(num_bams=4, dim_1=32, dim_2=64)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "banet_default.safetensors"
#: The default weights exported to ONNX (FP32, dynamic N/H/W, parity-verified), shipped as package data.
DEFAULT_ONNX = DEFAULT_WEIGHTS.with_suffix(".onnx")

#: PyTorch for CPU machines, pinned as scripts/setup.sh pins it: an unpinned ``torch`` pulls a multi-GB CUDA build.
TORCH_CPU_INSTALL = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
#: The model layer (checkpoints, export, quantization, engine builds), CPU torch first.
EXPORT_INSTALL = f"{TORCH_CPU_INSTALL} && pip install 'banet-deploy[export]'"


def default_weights_path() -> Path:
    """Path of the embedded default checkpoint; a clear error if the package was installed without it."""
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the embedded default weights are missing ({DEFAULT_WEIGHTS}); reinstall banet-deploy from the "
            "repository or pass --weights with a checkpoint")
    return DEFAULT_WEIGHTS


def default_model_path(backend: str | None = None) -> Path:
    """The default model's file for ``backend``: the checkpoint where PyTorch is installed and the torch backend is
    wanted (or none is named), else the shipped ONNX, which needs no PyTorch. (``Deblurrer()`` names a backend:
    runtime.selection picks the fastest installed for the default model.)"""
    torch_wanted = backend in (None, "torch")
    if torch_wanted and (backend == "torch" or importlib.util.find_spec("torch") is not None):
        return default_weights_path()
    if backend == "tensorrt":
        raise OptionError("the tensorrt backend runs engines built by export/build_trt.py: pass the .engine path")
    if not DEFAULT_ONNX.is_file():
        raise FileNotFoundError(f"the embedded default model's ONNX is missing ({DEFAULT_ONNX}); reinstall "
                                f"banet-deploy, or install PyTorch to run its checkpoint: {EXPORT_INSTALL}")
    return DEFAULT_ONNX


def started_as_command(module_name: str) -> bool:
    """Whether the module named ``module_name`` (its ``__name__``) runs as a command: ``python file.py`` or
    ``python -m`` (``__main__``), or one of this package's console scripts (``banet-export-onnx``...), which imports
    it under its own name; there a failed import is one line (:func:`missing_module_line`), elsewhere re-raised."""
    return module_name == "__main__" or Path(sys.argv[0] if sys.argv else "").name.startswith("banet-")


def exit_if_command(exc: ModuleNotFoundError, module_name: str, command: str) -> None:
    """In a command module's import guard: when it runs as a command (:func:`started_as_command`), exit with
    :func:`missing_module_line`'s one line; else return, and the guard re-raises ``exc`` for the program importing
    it."""
    if started_as_command(module_name):
        raise SystemExit(missing_module_line(exc, command)) from None


def missing_module_line(exc: ModuleNotFoundError, command: str) -> str:
    """One line for a command whose imports failed (run outside the project's venv, or a thin install): what is
    missing, for which Python, and how to get it (the CPU torch pin where torch is the missing one); the project's
    venv only where this is a checkout (an installed package has no scripts/setup.sh)."""
    name = (exc.name or str(exc)).split(".")[0]
    fix = (EXPORT_INSTALL if name == "torch" else
           "pip install 'banet-deploy[export]' (with CPU torch first: " + TORCH_CPU_INSTALL + ")")
    checkout = (Path(__file__).resolve().parents[1] / "scripts" / "setup.sh").is_file()
    venv = (f"run it with the project's venv (bash scripts/setup.sh, then .venv/bin/python {command} ...) or "
            if checkout else "")
    return f"error: {command} needs the Python package {name!r}, which {sys.executable} does not have; {venv}" \
           f"install it: {fix}"
