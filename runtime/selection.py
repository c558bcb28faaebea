"""Which file and backend a ``Deblurrer`` runs when the user names a precision or asks for ``backend="auto"``.

- ``backend="auto"``: an ``.onnx`` (and the default model) runs on OpenVINO where it is installed, else on ONNX
  Runtime; an engine on TensorRT; a checkpoint on PyTorch. OpenVINO first because it measured faster on CPUs at
  FP32 and INT8 (``python -m benchmarks.run``; the README's CPU table). ``Deblurrer()`` with neither a model nor
  a backend is ``backend="auto"`` on the default model: its shipped FP32 ONNX (the same pixels as its checkpoint
  on PyTorch, ~150 dB apart) on the fastest engine installed; ``backend="torch"`` runs the checkpoint.
- ``precision="int8"``: the INT8 Q/DQ file of the model for the backend (flavour :data:`INT8_FLAVOUR`), found next
  to an FP32 ``.onnx`` (the shipped ones next to the default model; a checkpoint's in the engines folder), or the
  file itself when it already is INT8. It runs only if the held-out cost recorded in it is within the budget
  (:mod:`banet.precision`); the file used is logged and kept as ``Deblurrer.model_path``. On OpenVINO its float
  layers run in bfloat16 where the CPU has the units and the file's record measured that (:func:`int8_compute`).
- An INT8 ``.onnx`` named as the model (no precision asked): its recorded held-out cost is read too. ``"auto"``
  runs it on the first CPU backend installed where it fits the budget (OpenVINO, then ONNX Runtime: the ``trt``
  flavour, made for TensorRT, lost 4.1 dB on OpenVINO and 0.17 on ONNX Runtime); a backend named where it was
  measured over the budget is refused in one line naming where it fits; one where it was not measured runs with a
  warning.
- ``precision="bf16"``: an FP32 ``.onnx`` (the default model's shipped one when no model is named) on OpenVINO in
  bfloat16 arithmetic, or a checkpoint (the default model's with ``backend="torch"``) on PyTorch under bfloat16
  autocast; CPUs with bfloat16 units only (refused elsewhere by the backend). No file of its own: the drift report
  and the CPU benchmark measure what it costs and buys.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from banet.artifacts import engines_dir, int8_onnx_path, onnx_path
from banet.errors import ArtifactError, OptionError
from banet.metadata import read_onnx_metadata, stale_source
from banet.precision import INT8_HELDOUT_BUDGET_DB, OPENVINO_BY_UNITS, heldout_record, int8_loss, int8_refusal
from runtime.loading import CHECKPOINT_SUFFIXES, ModelNotFoundError, backend_for_path

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "bf16")
#: Which INT8 flavour (calibration.quantize --flavour) each CPU backend runs: ``ort`` (U8S8) is what ONNX Runtime's
#: CPU kernels are fastest with; ``ov`` (made by NNCF) is the one OpenVINO runs every convolution of in int8
#: (README, CPU table). A model with no ``ov`` file runs its ``ort`` file on OpenVINO (:func:`int8_file`).
INT8_FLAVOUR = {"onnxruntime": "ort", "openvino": "ov"}
#: The flavour a backend falls back to where the model has no file of the backend's own (with a warning).
INT8_FALLBACK = {"openvino": "ort"}


def auto_backend(model: Path | None) -> str:
    """The fastest backend installed here for ``model`` (None: the default model)."""
    kind = "onnxruntime" if model is None else backend_for_path(model)
    if kind != "onnxruntime":
        return kind
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"


#: Backend options only PyTorch takes: asking for them (e.g. ``device="cuda"``) on the default model means its
#: checkpoint on PyTorch, as before ``Deblurrer()`` ran the ONNX on the fastest CPU engine.
TORCH_OPTIONS = ("half", "channels_last", "fold_attention")


def choose(model: Path | None, backend: str | None, precision: str | None,
           options: dict | None = None) -> tuple[Path, str | None]:
    """(file to open, backend) for a Deblurrer's ``model``, ``backend``, ``precision`` and backend ``options``."""
    if precision is not None and precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {PRECISIONS} (or None: the file's own), got {precision!r}")
    options = options or {}
    if model is None and backend is None and (any(o in options for o in TORCH_OPTIONS)
                                              or str(options.get("device", "")).startswith("cuda")):
        backend = "torch"  # a GPU (or half precision) asked for: the checkpoint on PyTorch
    if precision == "bf16":
        from banet.defaults import default_model_path

        default = default_model_path("torch" if backend == "torch" else "openvino")
        return bf16_choice(Path(model) if model is not None else default, backend)
    auto = backend == "auto" or (model is None and backend is None)
    if auto:  # the default model runs on the fastest installed
        backend = auto_backend(model)
    if model is None:
        from banet.defaults import default_model_path

        model = default_model_path("onnxruntime" if precision == "int8" else backend)
    model = Path(model)
    if precision != "int8":
        found = read_onnx_metadata(model).precision if model.suffix.lower() == ".onnx" and model.is_file() else None
        if precision == "fp32" and found not in (None, "fp32"):
            raise OptionError(f"precision='fp32' asked, but {model.name} is a {found} model")
        if found == "int8":
            return model, int8_backend(model, backend, auto)
        return model, backend
    if backend is None and model.suffix.lower() in CHECKPOINT_SUFFIXES:
        backend = auto_backend(None)  # a checkpoint's INT8 file (engines/<stem>_int8_*.onnx) on the fastest CPU one
    backend = backend or backend_for_path(model)
    if backend not in INT8_FLAVOUR:
        raise OptionError(f"precision='int8' runs INT8 Q/DQ ONNX files on {' or '.join(INT8_FLAVOUR)}, not on "
                          f"{backend}; for TensorRT build an INT8 engine (python export/build_trt.py --int8)")
    chosen = int8_file(model, backend)
    reason = int8_refusal(read_onnx_metadata(chosen), backend, chosen.name)
    if reason:
        raise ArtifactError(f"{reason}; refusing precision='int8' (run FP32, or make a file within the budget)")
    log.info("precision int8: running %s on %s", chosen, backend)
    return chosen, backend


def int8_backend(model: Path, backend: str | None, auto: bool) -> str | None:
    """The backend an INT8 ``.onnx`` named as the model runs on: with ``auto``, the first CPU backend installed
    where its recorded held-out loss fits :data:`banet.precision.INT8_HELDOUT_BUDGET_DB`; else ``backend``, refused
    (ArtifactError) where the file was measured over the budget on it, with a warning where it was not measured."""
    metadata = read_onnx_metadata(model)
    installed = [b for b in ("openvino", "onnxruntime") if importlib.util.find_spec(b) is not None]
    fits = [b for b in installed if (loss := int8_loss(metadata, b)) is not None and loss <= INT8_HELDOUT_BUDGET_DB]
    if auto and fits:
        if fits[0] != backend:
            log.info("%s runs on %s: %s", model.name, fits[0], int8_refusal(metadata, backend, "it"))
        return fits[0]
    runs_on = backend or backend_for_path(model)
    if runs_on not in INT8_FLAVOUR:
        return backend  # not a CPU ONNX backend: the backend refuses the file itself
    loss = int8_loss(metadata, runs_on)
    if loss is not None and loss > INT8_HELDOUT_BUDGET_DB:
        where = f"it fits on {', '.join(fits)}" if fits else "it fits on no backend installed here"
        raise ArtifactError(f"{int8_refusal(metadata, runs_on, model.name)}; refusing it ({where}: pass "
                            "backend= that one or \"auto\", or quantize it for this backend: python -m "
                            "calibration.quantize)")
    if loss is None:
        log.warning("%s; running it without that check", int8_refusal(metadata, runs_on, model.name))
    return backend


def bf16_choice(model: Path, backend: str | None) -> tuple[Path, str]:
    """(model, backend) for ``precision="bf16"``: an FP32 ``.onnx`` on OpenVINO or a checkpoint on PyTorch, else one
    OptionError line. Both backends take the same option (``inference_precision="bf16"``) and check the CPU."""
    suffix = model.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        backend = "torch" if backend in (None, "auto") else backend
        if backend != "torch":
            raise OptionError(f"precision='bf16' runs a checkpoint on PyTorch (backend='torch'), not on {backend}; "
                              f"for OpenVINO export it first (python export/to_onnx.py --weights {model})")
        log.info("precision bf16: running %s on torch under bfloat16 autocast", model)
        return model, backend
    if suffix != ".onnx":
        raise OptionError(f"precision='bf16' runs an FP32 .onnx (OpenVINO) or a checkpoint (PyTorch), not "
                          f"{model.name}; on a GPU use an FP16 engine (build_trt.py --fp16)")
    backend = "openvino" if backend in (None, "auto") else backend
    if backend != "openvino":
        raise OptionError(f"precision='bf16' runs FP32 ONNX files on OpenVINO (CPUs with bfloat16 units), not on "
                          f"{backend}; checkpoints run in bfloat16 on PyTorch; on a GPU use half=True (PyTorch) or "
                          "an FP16 engine (build_trt.py --fp16)")
    found = read_onnx_metadata(model).precision if model.is_file() else "fp32"
    if found != "fp32":
        raise OptionError(f"precision='bf16' lowers an FP32 model; {model.name} is an {found.upper()} model")
    log.info("precision bf16: running %s on openvino in bfloat16", model)
    return model, backend


def precision_options(precision: str | None, model: Path | None = None, backend: str | None = None,
                      options: dict | None = None) -> dict:
    """Backend options a precision adds for the (``model``, ``backend``) :func:`choose` picked: bfloat16 arithmetic
    for "bf16" (OpenVINO and PyTorch take the same option); for an INT8 file on OpenVINO, :func:`int8_compute`."""
    if precision == "bf16":
        return {"inference_precision": "bf16"}
    if backend == "openvino" and model is not None and "inference_precision" not in (options or {}):
        return int8_compute(model)
    return {}


#: The held-out record's name for OpenVINO running an INT8 file's float layers in bfloat16.
OPENVINO_INT8_BF16 = "openvino-bf16"


def int8_compute(model: Path) -> dict:
    """``{"inference_precision": "bf16"}`` for an INT8 file OpenVINO runs faster with its float layers in bfloat16
    (on a CPU with bfloat16 units, the int8 layers unchanged), where the file's held-out record measured that
    within the budget (:data:`OPENVINO_INT8_BF16`); else ``{}`` (f32, as the file was measured). The benchmark
    times both (``openvino int8 (ov)`` and ``openvino int8 (ov, bf16)``)."""
    if model.suffix.lower() != ".onnx" or not model.is_file():
        return {}
    metadata = read_onnx_metadata(model)
    if metadata.precision != "int8":
        return {}
    loss = int8_loss(metadata, OPENVINO_INT8_BF16)
    if loss is None or loss > INT8_HELDOUT_BUDGET_DB:
        return {}
    from runtime.backends.openvino_backend import openvino_bf16_units

    if not openvino_bf16_units():
        return {}
    log.info("%s: its float layers in bfloat16 on OpenVINO (held-out cost %.2f dB, measured)", model.name, loss)
    return {"inference_precision": "bf16"}


def int8_file(model: Path, backend: str) -> Path:
    """The INT8 file standing for ``model`` on ``backend``; ModelNotFoundError naming the command that makes it."""
    if not model.exists():
        raise ModelNotFoundError(f"{model}: model file not found")
    flavour = INT8_FLAVOUR[backend]
    suffix = model.suffix.lower()
    if suffix == ".onnx" and read_onnx_metadata(model).precision == "int8":
        return model
    if suffix == ".onnx":
        fp32, candidate = model, int8_onnx_path(model, flavour)
    elif suffix in CHECKPOINT_SUFFIXES:
        # its exports in the engines folder, else beside it (the shipped default's INT8 files sit next to it: a
        # checkpoint given by path was refused, and sent to make files that were there)
        beside = model.with_suffix(".onnx")
        fp32 = onnx_path(model.stem)
        if not any(int8_onnx_path(fp32, f).is_file() for f in {flavour, INT8_FALLBACK.get(backend)} if f) and \
                any(int8_onnx_path(beside, f).is_file() for f in {flavour, INT8_FALLBACK.get(backend)} if f):
            fp32 = beside
        candidate = int8_onnx_path(fp32, flavour)
    else:
        raise OptionError(f"precision='int8' takes an .onnx or a checkpoint, not {model.name}")
    fallback = INT8_FALLBACK.get(backend)
    if fallback and int8_onnx_path(fp32, fallback).is_file():
        missing = not candidate.is_file()
        elsewhere = None if missing else measured_elsewhere(candidate)
        over = None if missing or elsewhere else over_budget_here(candidate, backend)
        if missing:
            log.warning("no %s INT8 file for %s (%s): running its %s file on %s, slower there; make the %s one "
                        "with python -m calibration.quantize --onnx %s --flavour %s", flavour, model.name,
                        candidate.name, fallback, backend, flavour, fp32, flavour)
        elif elsewhere:
            log.warning("%s: its quality on this CPU is unmeasured, so its %s file runs on %s; measure the %s one "
                        "here with python -m calibration.quantize --onnx %s --flavour %s --force", elsewhere,
                        fallback, backend, flavour, fp32, flavour)
        elif over:  # measured: the fallback is the right file here, nothing for the user to do
            log.info("%s, so its %s file runs on %s", over, fallback, backend)
        if missing or elsewhere or over:
            flavour, candidate = fallback, int8_onnx_path(fp32, fallback)
    if not candidate.is_file():
        # a checkpoint's: quantize exports it first where its ONNX is missing (an --onnx that is not there failed)
        source = f"--onnx {fp32}" if suffix == ".onnx" or fp32.is_file() else f"--weights {model}"
        raise ModelNotFoundError(
            f"no INT8 file for {model.name} on {backend}: {candidate} does not exist; make it with python -m "
            f"calibration.quantize {source} --flavour {flavour}"
            + (f" (engines folder: {engines_dir()})" if suffix != ".onnx" else ""))
    problem = int8_source_problem(model, candidate)
    if problem:
        raise ArtifactError(f"{problem}; it would deblur with those weights: re-make it with python -m "
                            f"calibration.quantize --onnx {fp32} --flavour {flavour} --force")
    return candidate


def measured_elsewhere(path: Path) -> str | None:
    """Why an INT8 file's held-out record may not hold on this CPU (it was measured for other int8 matrix units
    than this CPU's: :func:`banet.machine.int8_units`), or None. OpenVINO picks its int8 kernels per unit, and what
    a file loses can differ with them: the ``ov`` file lost 0.03 dB on OpenVINO with AMX and 2.13 dB with the
    kernels of CPUs without it (docs/int8.md). A record measured per unit class (:data:`OPENVINO_BY_UNITS`) holds
    for the classes it lists; an older one for the units it names; one without either says nothing either way."""
    from banet.machine import int8_units

    record = heldout_record(read_onnx_metadata(path)) or {}
    here, by_units = int8_units(), record.get(OPENVINO_BY_UNITS)
    if isinstance(by_units, dict) and by_units:
        if here == "unknown" or here in by_units:
            return None
        return (f"{path.name} was measured for CPUs with {', '.join(by_units)} int8 units "
                f"({record.get('cpu', 'unnamed')}), this one has {here}")
    there = record.get("int8_units")
    if not there or "unknown" in (there, here) or there == here:
        return None
    return (f"{path.name} was measured on a CPU with {there} int8 units ({record.get('cpu', 'unnamed')}), this one "
            f"has {here}")


def over_budget_here(path: Path, backend: str) -> str | None:
    """Why an INT8 file's record, as it holds on this CPU (:func:`banet.precision.int8_loss`), is over the budget
    on ``backend``, or None (within it, or not measured there)."""
    metadata = read_onnx_metadata(path)
    loss = int8_loss(metadata, backend)
    return int8_refusal(metadata, backend, path.name) if loss is not None and loss > INT8_HELDOUT_BUDGET_DB else None


def int8_source_problem(model: Path, candidate: Path) -> str | None:
    """Why the INT8 file ``candidate`` found for ``model`` does not stand for it (quantized from other weights, or
    an older graph), or None. Both files record the sha256 of the checkpoint they come from; a checkpoint is
    hashed. A retrained model re-exported under its old name must not run through the old model's INT8 file."""
    int8 = read_onnx_metadata(candidate)
    if model.suffix.lower() != ".onnx":
        return stale_source(int8, candidate, model)
    source = read_onnx_metadata(model).source_sha256
    if source and int8.source_sha256 and source != int8.source_sha256:
        return (f"{candidate.name} was quantized from other weights than {model.name} (sha256 "
                f"{int8.source_sha256[:12]}... vs {source[:12]}...)")
    return stale_source(int8, candidate, None)
