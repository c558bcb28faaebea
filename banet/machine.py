"""Which machine this is, for naming results files and reports (no third-party imports)."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: results files are named after it.
    Under a oneDNN instruction-set cap (:func:`isa_cap`) the name says so: what runs there is another CPU's code."""
    cap = isa_cap()
    return _model_name() + (f" (oneDNN ISA cap {cap})" if cap else "")


def _model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Environment variables capping the instruction sets oneDNN dispatches to (OpenVINO's CPU plugin and PyTorch's
#: oneDNN kernels read them when they load): ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` runs the kernels a CPU without
#: AMX runs, the same arithmetic, on this one. ONNX Runtime's own kernels do not read them.
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
#: The caps oneDNN knows (its ``dnnl_cpu_isa`` names, lowest first); it ignores any other value.
ISA_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
            "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
            "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
#: The caps under which each unit may still be used.
_AMX_CAPS = frozenset({"AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                       "AVX10_2_512_AMX_2"})
_BF16_CAPS = _AMX_CAPS | {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX10_2_512"}
UNIT_CAPS = {"amx_int8": _AMX_CAPS, "amx_bf16": _AMX_CAPS, "avx512_bf16": _BF16_CAPS,
             "avx512_vnni": _BF16_CAPS | {"AVX512_CORE_VNNI"},
             "avx_vnni": _BF16_CAPS | {"AVX512_CORE_VNNI", "AVX2_VNNI", "AVX2_VNNI_2"}}


def isa_cap(environ: dict | None = None) -> str | None:
    """The oneDNN instruction-set cap in force (:data:`ISA_CAP_VARIABLES`, one of :data:`ISA_CAPS`, any case), or
    None (unset, ``ALL``, or a name oneDNN ignores). ``ONEDNN_MAX_CPU_ISA`` wins over ``DNNL_MAX_CPU_ISA``."""
    environ = os.environ if environ is None else environ
    value = next((environ[name] for name in ISA_CAP_VARIABLES if environ.get(name, "").strip()), "")
    value = value.strip().upper()
    return value if value in ISA_CAPS else None


def cap_allows(unit: str, cap: str | None) -> bool:
    """Whether oneDNN may use ``unit`` (a ``/proc/cpuinfo`` flag of :data:`UNIT_CAPS`) under ``cap``."""
    return cap is None or cap in UNIT_CAPS[unit]


#: CPU flags of the int8 matrix units an engine's int8 kernels use, best first (``/proc/cpuinfo`` names).
INT8_UNIT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


#: Each int8 unit class and the oneDNN cap that runs its kernels on a CPU with better units ("none": AVX2, no int8
#: dot-product instruction).
UNIT_CLASS_CAPS = {"amx_int8": "AVX512_CORE_AMX", "avx512_vnni": "AVX512_CORE_VNNI", "avx_vnni": "AVX2_VNNI",
                   "none": "AVX2"}


def _cpu_flags(cpuinfo: str | None) -> list[str] | None:
    """The x86 CPU's flags from ``/proc/cpuinfo`` (or ``cpuinfo``), or None where there are none to read (no such
    file, or another architecture's listing: ARM's says ``Features``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    return next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)


def lesser_unit_classes(cpuinfo: str | None = None, environ: dict | None = None) -> dict[str, str]:
    """The int8 unit classes below this CPU's (:func:`int8_units`) whose kernels it can also run, each with the
    oneDNN cap that runs them (:data:`UNIT_CLASS_CAPS`): an INT8 file's quality is measured for each of them here.
    Empty where the CPU cannot be read."""
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return {}
    here = _best_unit(flags, isa_cap(environ))
    ranked = [*INT8_UNIT_FLAGS, "none"]
    below = ranked[ranked.index(here) + 1:]
    return {unit: UNIT_CLASS_CAPS[unit] for unit in below if unit in flags or unit == "none" and "avx2" in flags}


def int8_units(cpuinfo: str | None = None, environ: dict | None = None) -> str:
    """The CPU's best int8 matrix unit (:data:`INT8_UNIT_FLAGS`: ``amx_int8``, ``avx512_vnni``, ``avx_vnni``) that
    oneDNN may use under the instruction-set cap in ``environ`` (:func:`isa_cap`), "none", or "unknown" where
    ``/proc/cpuinfo`` lists no x86 flags (none there, or another architecture). An engine picks different int8
    kernels per unit, and an INT8 file's measured quality holds for the kind it was measured on
    (:func:`runtime.selection.int8_file`)."""
    flags = _cpu_flags(cpuinfo)
    return "unknown" if flags is None else _best_unit(flags, isa_cap(environ))


def _best_unit(flags: list[str], cap: str | None) -> str:
    """The best of :data:`INT8_UNIT_FLAGS` among ``flags`` that oneDNN may use under ``cap``, or "none"."""
    return next((flag for flag in INT8_UNIT_FLAGS if flag in flags and cap_allows(flag, cap)), "none")


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - Windows
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (results files are named after the machine)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80]


def results_stem(kind: str | None, machine: str | None = None, date: str | None = None) -> str:
    """``<kind>_<machine>_<date>``: the one name of a results file (without its suffix) in benchmarks/results.

    ``machine`` defaults to this CPU's name (a GPU benchmark passes the GPU's), ``date`` to today (ISO); ``kind``
    None gives ``<machine>_<date>``, the name benchmarks.run's main tables have always had.
    """
    date = date or datetime.date.today().isoformat()
    return "_".join(([kind] if kind else []) + [slug(machine or cpu_name()), date])
