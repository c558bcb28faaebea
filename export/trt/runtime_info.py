"""Which TensorRT a build uses (TensorRT 10/11 or TensorRT for RTX), and the errors every stage raises."""


from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from banet.manifest import (
    FLAVOUR_NAMES,
    FLAVOURS,
    PRECISIONS,  # noqa: F401 - the precisions a build takes are those a manifest may record
)

log = logging.getLogger(__name__)


class PlanError(ValueError):
    """A build request that cannot work; the message says why and what to do instead. Raised before building."""


class BuildError(RuntimeError):
    """TensorRT refused or failed the build (the message carries its first error)."""


class RuntimeMissingError(RuntimeError):
    """The requested TensorRT flavour (or a GPU it needs) is not on this machine; one line with install hints."""


@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT flavour a build uses; ``module`` is None where it is not installed (dry runs still plan)."""

    flavour: str
    module: object | None = None
    version: str | None = None

    @property
    def major(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None

    @property
    def label(self) -> str:
        return f"{FLAVOUR_NAMES[self.flavour]} {self.version or '(not installed)'}"


def import_tensorrt(flavour: str):
    try:
        module = importlib.import_module(FLAVOURS[flavour])
        return module, str(module.__version__)
    except Exception:  # ImportError, or a broken install (e.g. PyPI's download stub): treated as missing
        return None, None


def detect_runtime(requested: str = "auto", precision: str | None = None) -> RuntimeInfo:
    """``auto``: TensorRT if installed, else TensorRT for RTX, else (not installed) TensorRT.

    For ``precision="int8"`` ``auto`` means TensorRT only: TensorRT for RTX has no INT8 convolutions (see
    :func:`make_plan`), so an INT8 plan is TensorRT's, installed or not.
    """
    if requested not in ("auto", *FLAVOURS):
        raise PlanError(f"unknown runtime {requested!r}; choose auto, tensorrt or tensorrt-rtx")
    candidates = (("tensorrt",) if precision == "int8" else FLAVOURS) if requested == "auto" else (requested,)
    for flavour in candidates:
        module, version = import_tensorrt(flavour)
        if module is not None:
            return RuntimeInfo(flavour, module, version)
    return RuntimeInfo("tensorrt" if requested == "auto" else requested)


def installed_runtime() -> RuntimeInfo | None:
    """The TensorRT-family module installed here (TensorRT first, else TensorRT for RTX), or None."""
    runtime = detect_runtime("auto")
    return runtime if runtime.module is not None else None
