"""Which machine this is, for naming results files and reports (no third-party imports)."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: results files are named after it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: CPU flags of the int8 matrix units an engine's int8 kernels use, best first (``/proc/cpuinfo`` names).
INT8_UNIT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def int8_units(cpuinfo: str | None = None) -> str:
    """The CPU's best int8 matrix unit (:data:`INT8_UNIT_FLAGS`: ``amx_int8``, ``avx512_vnni``, ``avx_vnni``), "none",
    or "unknown" where ``/proc/cpuinfo`` cannot be read. An engine picks different int8 kernels per unit, and an INT8
    file's measured quality holds for the kind it was measured on (:func:`runtime.selection.int8_file`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return next((flag for flag in INT8_UNIT_FLAGS if flag in flags), "none")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (results files are named after the machine)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]


def results_stem(kind: str | None, machine: str | None = None, date: str | None = None) -> str:
    """``<kind>_<machine>_<date>``: the one name of a results file (without its suffix) in benchmarks/results.

    ``machine`` defaults to this CPU's name (a GPU benchmark passes the GPU's), ``date`` to today (ISO); ``kind``
    None gives ``<machine>_<date>``, the name benchmarks.run's main tables have always had.
    """
    date = date or datetime.date.today().isoformat()
    return "_".join(([kind] if kind else []) + [slug(machine or cpu_name()), date])
