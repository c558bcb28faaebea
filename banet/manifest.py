"""Engine manifests: the JSON file next to every TensorRT engine, and the check that keeps engines honest.

A serialized TensorRT engine only runs on the TensorRT release that built it (unless built version-compatible)
and on the GPU it was built for (unless built hardware-compatible); TensorRT for RTX engines run on the compute
capabilities they were compiled for. ``export/build_trt.py`` writes one :class:`EngineManifest` next to each
engine (``engines/banet_default_fp16.engine`` -> ``engines/banet_default_fp16.json``) with what it was built
from and for; the runtime reads it *before* touching the engine and refuses, with a message saying what differs
and the command that rebuilds it, instead of failing deep inside TensorRT or producing garbage.

This module is the only writer and reader of manifests and the only place that decides compatibility;
it needs neither TensorRT nor a GPU.

Replacing an engine and its manifest together (a rebuild with ``--force``) cannot be one rename, and the
runtime opens the engine under its stable name, so the pair is swapped in two renames with a recovery rule:

1. :func:`stage_pair` writes the new engine and its manifest, each synced, under staged names
   (``x.partial.engine``, ``x.partial.json``); the old pair is untouched.
2. :func:`commit_pair` renames the engine over ``x.engine``: the commit point. Then the manifest over
   ``x.json``.
3. :func:`read_manifest`, when ``x.json`` is missing or does not describe ``x.engine`` (sha256 and size), takes
   ``x.partial.json`` if that one does: a build killed between the two renames.

So at every instant a reader sees the old pair (before step 2's first rename) or the new one (after it). A
build killed anywhere leaves only staged files, which the next build to that engine settles first
(:func:`settle_pair`: an interrupted commit is completed, the rest removed). Two builds of the same engine at
once would settle (delete) each other's staged files, so a build holds :func:`build_lock` from settling to
committing, and a second one is refused in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from banet.conventions import METADATA_PREFIX
from banet.hashing import file_sha256
from banet.metadata import PRECISIONS, ModelMetadata
from banet.outputs import PARTIAL, OutputBusyError, output_lock, sync_folder, write_atomic

SCHEMA_VERSION = 1

#: Runtime flavours: the name used on the command line and in manifests -> the Python module.
FLAVOURS = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
FLAVOUR_NAMES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}
INSTALL_HINTS = {
    "tensorrt": "install TensorRT 10+ and cuda-python from NVIDIA (pip install 'banet-deploy[tensorrt]' with "
                "NVIDIA's package index, or the TensorRT tar/deb packages)",
    "tensorrt-rtx": "pip install 'banet-deploy[rtx]' (PyPI tensorrt-rtx and cuda-python)",
}

#: Compute capabilities TensorRT for RTX compiles for by default (no --target): Ampere, Ada and Blackwell RTX
#: GPUs "and later" (NVIDIA's TensorRT-RTX documentation, "CPU-Only AOT and TensorRT-RTX Engines").
RTX_DEFAULT_TARGETS = ("sm86", "sm89", "sm120", "sm121")
#: Every compute capability a TensorRT for RTX engine can be targeted at (module ComputeCapability enum).
RTX_KNOWN_TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")
#: Datacenter and embedded architectures that are not RTX GPUs even though their number is >= 8.0.
_NOT_RTX = {(8, 7), (9, 0), (10, 0), (10, 1), (10, 3), (11, 0)}

HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


class EngineBusyError(OutputBusyError):
    """Another process is building the same engine right now."""


class ManifestError(RuntimeError):
    """A manifest that is missing, unreadable, or does not describe the engine next to it."""


def manifest_path(engine: str | Path) -> Path:
    """``engines/x.engine`` -> ``engines/x.json`` (the name ``export/to_triton.py`` also reads)."""
    return Path(engine).with_suffix(".json")


def cc_text(cc: tuple[int, int] | None) -> str:
    return "unknown" if cc is None else f"{cc[0]}.{cc[1]}"


def target_to_cc(target: str) -> tuple[int, int]:
    """``"sm75"`` -> (7, 5); ``"sm120"`` -> (12, 0)."""
    digits = target.lower().removeprefix("sm").removeprefix("_")
    if not digits.isdigit() or len(digits) < 2:
        raise ValueError(f"not a compute capability target: {target!r} (expected e.g. sm75, sm86, sm120)")
    return int(digits[:-1]), int(digits[-1])


def cc_to_target(cc: tuple[int, int]) -> str:
    return f"sm{cc[0]}{cc[1]}"


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of the engine's input, each shape NCHW."""

    input: str
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        return cls(data["input"], tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


#: JSON types of the manifest's fields (``gpu`` may also be null); anything else is refused when read.
_FIELD_TYPES: dict[str, type] = {
    "engine": str, "engine_sha256": str, "engine_bytes": int, "runtime": str, "runtime_version": str, "precision": str,
    "profiles": list, "onnx": dict, "metadata": dict, "build": dict, "gpu": dict, "targets": list,
    "version_compatible": bool, "hardware_compatibility": str, "drift": dict, "rebuild_command": str,
}


def _is(value: object, kind: type) -> bool:
    """``isinstance`` for JSON values, where ``true`` must not pass for a number."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_shape(value: object) -> bool:
    """An NCHW profile shape: 4 positive integers."""
    return isinstance(value, list) and len(value) == 4 and all(_is(v, int) and v >= 1 for v in value)


def _is_target(value: object) -> bool:
    try:
        return isinstance(value, str) and bool(target_to_cc(value))
    except ValueError:
        return False


def _nested_problems(data: dict) -> list[str]:
    """What is wrong inside the manifest's objects and lists (their own types already checked): each problem
    names the field, as a hand-edited manifest would otherwise fail later with a KeyError or TypeError."""
    wrong = []
    if data["precision"] not in PRECISIONS:
        wrong.append(f"precision {data['precision']!r} (expected {', '.join(PRECISIONS)})")
    shapes = ("min", "opt", "max")
    for i, profile in enumerate(data["profiles"]):
        if not isinstance(profile.get("input"), str) or not all(_is_shape(profile.get(k)) for k in shapes):
            wrong.append(f"profiles[{i}] (expected an input name and min/opt/max shapes of 4 positive integers)")
    metadata = data["metadata"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        wrong.append("metadata (expected text values)")
    else:
        try:  # what model_metadata() reads: the ONNX's banet.* metadata, with the engine's precision
            ModelMetadata.from_props({**metadata, METADATA_PREFIX + "precision": data["precision"]}, "metadata")
        except (ValueError, KeyError, TypeError) as exc:  # ArtifactError is a ValueError
            reason = str(exc).split(";")[0].removeprefix("metadata: ")  # its advice is for ONNX files
            wrong.append(f"metadata ({reason})")
    if not all(isinstance(data["onnx"].get(k, ""), str) for k in ("path", "precision", "sha256")):
        wrong.append("onnx (expected text path, precision and sha256)")
    if not all(_is_target(t) for t in data.get("targets") or []):
        wrong.append("targets (expected names such as sm75)")
    gpu = data.get("gpu") or {}
    cc = gpu.get("compute_capability") or [0, 0]  # absent or null: not known (an ahead-of-time build)
    if not isinstance(gpu.get("name", ""), str) or not (isinstance(cc, list) and len(cc) == 2
                                                        and all(_is(v, int) for v in cc)):
        wrong.append("gpu (expected a text name and a compute_capability of 2 integers such as [7, 5])")
    build = data["build"]
    if not isinstance(build.get("strongly_typed", True), bool):
        wrong.append("build.strongly_typed (expected true or false)")
    if "seconds" in build and not _is_number(build["seconds"]):
        wrong.append("build.seconds (expected a number)")
    if data.get("hardware_compatibility", "none") not in HARDWARE_COMPATIBILITY:
        wrong.append(f"hardware_compatibility {data['hardware_compatibility']!r} (expected "
                     f"{', '.join(HARDWARE_COMPATIBILITY)})")
    drift = data.get("drift") or {}
    if ("worst_psnr_db" in drift and not _is_number(drift["worst_psnr_db"])) or \
            not isinstance(drift.get("passed", True), bool):
        wrong.append("drift (expected a number worst_psnr_db and true or false passed)")
    return wrong


@dataclass
class EngineManifest:
    """What an engine was built from and for. Written by the builder, checked by the runtime."""

    engine: str  # file name of the engine, next to the manifest
    engine_sha256: str
    engine_bytes: int
    runtime: str  # "tensorrt" | "tensorrt-rtx"
    runtime_version: str
    precision: str  # "fp32" | "fp16" | "int8"
    profiles: list[dict]
    onnx: dict  # {"path", "sha256", "bytes", "precision"}
    metadata: dict[str, str]  # the ONNX's banet.* metadata (conventions, network configuration, source sha)
    build: dict  # options, strongly typed or not, seconds, when, host
    #: GPU the engine was built on (name, compute_capability) or None for an ahead-of-time build without a GPU.
    gpu: dict | None = None
    #: TensorRT for RTX compute capability targets ("sm75", ...); empty means the builder's default targets.
    targets: list[str] = field(default_factory=list)
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    #: engine vs ONNX Runtime FP32 right after the build; {"skipped": reason} where it could not run.
    drift: dict = field(default_factory=dict)
    rebuild_command: str = ""
    schema: int = SCHEMA_VERSION

    # -- reading and writing -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        """Write the manifest whole or not at all (an ``OSError`` leaves ``path`` as it was)."""
        return write_atomic(Path(path), (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode())

    def describes(self, size: int, sha256: str) -> bool:
        """Whether this manifest is the one of an engine file of ``size`` bytes and this ``sha256``."""
        return size == self.engine_bytes and sha256 == self.engine_sha256

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> EngineManifest:
        """The manifest ``data`` holds (``source``: the file it was read from, for messages); anything a reader
        could trip over later (a missing key, a wrong type, nested ones too, metadata that does not parse) is one
        :class:`ManifestError` line naming the field, so every reader (the runtime, ``--check``, the Triton
        exporter) gets the same checks."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: not an engine manifest (a JSON {type(data).__name__}, expected an "
                                "object); rebuild the engine with export/build_trt.py")
        if data.get("schema") != SCHEMA_VERSION:
            raise ManifestError(f"{source}: manifest schema {data.get('schema')!r} is not supported "
                                f"(expected {SCHEMA_VERSION}); rebuild the engine with export/build_trt.py")
        required = ("engine", "engine_sha256", "engine_bytes", "runtime", "runtime_version", "precision",
                    "profiles", "onnx", "metadata", "build")
        missing = [k for k in required if k not in data]
        if missing:
            raise ManifestError(f"{source}: manifest lacks {missing}; rebuild the engine with export/build_trt.py")
        wrong = [f"{key} ({type(data[key]).__name__}, expected {kind.__name__})" for key, kind in _FIELD_TYPES.items()
                 if key in data and data[key] is not None and not _is(data[key], kind)]
        profiles = data["profiles"]
        if not wrong and (not profiles or not all(isinstance(p, dict) for p in profiles)):
            wrong.append("profiles (expected a non-empty list of objects)")
        if not wrong and data["runtime"] not in FLAVOURS:
            raise ManifestError(f"{source}: unknown runtime {data['runtime']!r} (expected one of {list(FLAVOURS)})")
        if not wrong:
            wrong = _nested_problems(data)
        if wrong:
            raise ManifestError(f"{source}: malformed manifest: {'; '.join(wrong)}; rebuild the engine with "
                                "export/build_trt.py")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def profile(self) -> Profile:
        return Profile.from_dict(self.profiles[0])

    @property
    def flavour_name(self) -> str:
        return f"{FLAVOUR_NAMES[self.runtime]} {self.runtime_version}"

    def model_metadata(self) -> ModelMetadata:
        """The model metadata the ONNX carried, with the engine's own precision."""
        props = dict(self.metadata)
        props[METADATA_PREFIX + "precision"] = self.precision
        return ModelMetadata.from_props(props, f"{self.engine} manifest")

    def describe_targets(self) -> str:
        if self.runtime != "tensorrt-rtx":
            return ""
        return ",".join(self.targets) if self.targets else "default (" + ",".join(RTX_DEFAULT_TARGETS) + " and later)"


def _load(path: Path) -> EngineManifest:
    """Parse one manifest file; ManifestError (one line) for anything unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc}); rebuild the engine with export/build_trt.py") \
            from exc
    return EngineManifest.from_dict(data, str(path))


def described_engine(path: str | Path) -> str | None:
    """The engine file name the manifest at ``path`` names (its ``engine`` field), or None where ``path`` holds no
    JSON object naming one (a user's own JSON, an unreadable file): what a build checks before it writes a
    manifest over that file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    engine = data.get("engine") if isinstance(data, dict) else None
    return engine if isinstance(engine, str) and engine else None


def _staged_for(engine: Path, size: int, sha256: str) -> EngineManifest | None:
    """The staged manifest (``x.partial.json``) if it describes ``engine``: a build killed between its renames."""
    staged = manifest_path(staged_engine_path(engine))
    try:
        manifest = _load(staged) if staged.is_file() else None
    except ManifestError:
        return None
    return manifest if manifest is not None and manifest.describes(size, sha256) else None


def read_manifest(engine: str | Path, verify_engine: bool = True) -> EngineManifest:
    """Read the manifest next to ``engine``; with ``verify_engine`` also check that it describes this file.

    With ``verify_engine``, a manifest that is missing or describes another file gives way to a staged manifest
    that describes this one (the recovery rule of the module docstring).
    """
    engine = Path(engine)
    path = manifest_path(engine)
    if verify_engine and not engine.is_file():
        raise ManifestError(f"{engine}: engine file not found" if not engine.exists() else
                            f"{engine} is a directory, not an engine file")
    size, sha = (engine.stat().st_size, file_sha256(engine)) if verify_engine else (0, "")
    if not path.is_file():
        staged = _staged_for(engine, size, sha) if verify_engine else None
        if staged is not None:
            return staged
        if engine.suffix.lower() == ".onnx":  # "no manifest" said nothing of the real mistake
            raise ManifestError(f"{engine} is an ONNX model, not an engine; build an engine from it with "
                                f"python export/build_trt.py --onnx {shlex.quote(str(engine))}")
        raise ManifestError(f"{engine}: no manifest at {path}; engines must be built by export/build_trt.py, "
                            "which writes it (python export/build_trt.py --help)")
    manifest = _load(path)
    if not verify_engine or manifest.describes(size, sha):
        return manifest
    staged = _staged_for(engine, size, sha)
    if staged is not None:
        return staged
    again = _load(path) if path.is_file() else manifest  # a build that finished both renames meanwhile
    if again.describes(size, sha):
        return again
    raise ManifestError(f"{path} does not describe {engine} (its size or sha256 differs: the engine was "
                        f"replaced or the manifest copied from another one); rebuild with: "
                        f"{manifest.rebuild_command or 'python export/build_trt.py'}")


# -- replacing an engine and its manifest together (module docstring) ----------------------------------------------
def staged_engine_path(engine: str | Path) -> Path:
    """``x.engine`` -> ``x.partial.engine``, where a build writes a new engine (its manifest: ``x.partial.json``)."""
    engine = Path(engine)
    return engine.with_name(f"{engine.stem}{PARTIAL}{engine.suffix}")


def staged_files(engine: str | Path) -> list[Path]:
    """Every file a build of ``engine`` writes before its commit, and the temporary names they are written under
    (``x.engine.partial`` is also what builds before this scheme left behind)."""
    engine = Path(engine)
    staged = staged_engine_path(engine)
    pairs = (staged, manifest_path(staged), engine, manifest_path(engine))
    return [staged, manifest_path(staged), *(p.with_name(p.name + PARTIAL) for p in pairs)]


def discard_staged(engine: str | Path) -> None:
    """Remove what :func:`stage_pair` wrote (the engine's committed pair is not touched)."""
    for path in staged_files(engine):
        path.unlink(missing_ok=True)


def stage_pair(engine: str | Path, data: bytes, manifest: EngineManifest) -> Path:
    """Write ``data`` and ``manifest`` (which must describe it) under the staged names; returns the staged engine.

    On any failure (``OSError``: a full disk...) nothing staged is left behind and the error is re-raised.
    """
    staged = staged_engine_path(engine)
    try:
        write_atomic(staged, data)
        manifest.write(manifest_path(staged))
    except BaseException:
        discard_staged(engine)
        raise
    return staged


def commit_pair(engine: str | Path) -> None:
    """Swap the staged pair in: the engine rename is the commit point, then the manifest's (module docstring)."""
    engine = Path(engine)
    staged = staged_engine_path(engine)
    os.replace(staged, engine)
    os.replace(manifest_path(staged), manifest_path(engine))
    sync_folder(engine.parent)


def build_lock(engine: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold the exclusive right to replace ``engine``'s pair (:func:`output_lock`); :class:`EngineBusyError` if
    another process has it."""
    return output_lock(engine, error=EngineBusyError,
                       message="another build of {output} is running (pid {pid}); wait for it to finish, or build "
                               "to another --output")


def settle_pair(engine: str | Path) -> bool:
    """Finish or discard what an interrupted build left next to ``engine``; True if a commit was completed.

    A staged manifest that describes ``engine`` while ``x.json`` does not is the second half of a commit that was
    killed: it is renamed into place. Every other staged file is removed; the committed pair stays as it is.
    """
    engine = Path(engine)
    staged = manifest_path(staged_engine_path(engine))
    finished = False
    if engine.is_file() and staged.is_file():
        size, sha = engine.stat().st_size, file_sha256(engine)
        try:
            current = _load(manifest_path(engine)) if manifest_path(engine).is_file() else None
        except ManifestError:
            current = None
        if (current is None or not current.describes(size, sha)) and _staged_for(engine, size, sha) is not None:
            os.replace(staged, manifest_path(engine))
            finished = True
    discard_staged(engine)
    return finished


# -- compatibility -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeEnvironment:
    """What the machine that wants to run the engine has."""

    flavour: str  # "tensorrt" | "tensorrt-rtx"
    version: str
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None


def rtx_runs_on(manifest: EngineManifest, cc: tuple[int, int]) -> bool:
    """Whether a TensorRT for RTX engine built for ``manifest.targets`` can run on a GPU of ``cc``."""
    if manifest.targets:
        return cc in {target_to_cc(t) for t in manifest.targets}
    return cc not in _NOT_RTX and (cc in {(8, 6), (8, 9)} or cc >= (12, 0))


def incompatibilities(manifest: EngineManifest, env: RuntimeEnvironment,
                      current_onnx_sha256: str | None = None) -> list[str]:
    """Every reason the engine cannot run in ``env`` (empty: it can). Pure: no TensorRT, no GPU needed.

    ``current_onnx_sha256`` is the sha256 of the ONNX file the engine was built from, as it is now (None when
    that file is not there to compare): a different one means the engine is stale.
    """
    problems = []
    built = manifest.flavour_name
    here = f"{FLAVOUR_NAMES.get(env.flavour, env.flavour)} {env.version}"
    if env.flavour != manifest.runtime:
        problems.append(f"it was built with {built} but this machine would run it with {here}; engines of one "
                        "cannot be loaded by the other")
    else:
        b, r = parse_version(manifest.runtime_version), parse_version(env.version)
        if manifest.runtime == "tensorrt" and manifest.version_compatible:
            if not (r >= b and r[:1] and b[:1] and r[0] - b[0] <= 1):
                problems.append(f"it was built version-compatible with {built}, which runs on that release and "
                                f"later ones of the same or the next major version, not on {here}")
        elif r != b:
            problems.append(f"it was built with {built} and this machine has {here}; engines only load on the "
                            "exact release that built them"
                            + (" (build with --version-compatible to relax this)" if manifest.runtime == "tensorrt"
                               else ""))
    cc = env.compute_capability
    gpu = f"{env.gpu_name or 'this GPU'} (compute capability {cc_text(cc)})"
    if cc is not None:
        if manifest.runtime == "tensorrt-rtx":
            if not rtx_runs_on(manifest, cc):
                problems.append(f"it was compiled by TensorRT for RTX for targets {manifest.describe_targets()}, "
                                f"and {gpu} is not among them" + (
                                    "; TensorRT for RTX runs on RTX GPUs (Turing sm75 with --target sm75, "
                                    "Ampere sm86, Ada sm89, Blackwell sm120): on datacenter GPUs use TensorRT "
                                    "(--runtime tensorrt)" if cc in _NOT_RTX or cc == (8, 0) else
                                    f"; rebuild with --target {cc_to_target(cc)}"))
        else:
            built_gpu = manifest.gpu or {}
            built_cc = tuple(built_gpu["compute_capability"]) if built_gpu.get("compute_capability") else None
            built_desc = (f"{built_gpu.get('name', 'an unknown GPU')} (compute capability "
                          f"{cc_text(built_cc)})")
            level = manifest.hardware_compatibility
            if level == "ampere_plus":
                if cc < (8, 0):
                    problems.append(f"it was built hardware-compatible for Ampere and later GPUs (compute capability "
                                    f">= 8.0) and {gpu} is older")
            elif level == "same_compute_capability":
                if built_cc is not None and cc != built_cc:
                    problems.append(f"it was built for GPUs of compute capability {cc_text(built_cc)} and {gpu} "
                                    "differs")
            elif built_cc is not None and cc != built_cc:
                problems.append(f"it was built on {built_desc} and {gpu} differs; TensorRT engines are specific to "
                                "the GPU they were built on (build with --hardware-compatible ampere_plus to relax)")
            elif built_gpu.get("name") and env.gpu_name and built_gpu["name"] != env.gpu_name:
                problems.append(f"it was built on {built_desc} and this is {gpu}; TensorRT engines are tuned for "
                                "the exact GPU model (build with --hardware-compatible same_compute_capability to "
                                "allow other models of the same compute capability)")
    if current_onnx_sha256 is not None and current_onnx_sha256 != manifest.onnx.get("sha256"):
        problems.append(f"the ONNX it was built from ({manifest.onnx.get('path')}) has changed since (sha256 "
                        f"{manifest.onnx.get('sha256', '?')[:12]}... then, {current_onnx_sha256[:12]}... now): the "
                        "engine is stale")
    return problems


def explain(engine: str | Path, manifest: EngineManifest, problems: list[str]) -> str:
    """One message for an incompatible engine: what differs, and how to rebuild it."""
    lines = [f"{engine} cannot run here:"] + [f"  - {p}" for p in problems]
    lines.append(f"rebuild it on this machine with: {manifest.rebuild_command or 'python export/build_trt.py'}")
    return "\n".join(lines)
