"""Train BANet on synthetic motion blur of real photographs: resumable, deterministic, CPU or GPU.

The recipe is the authors' scaled to what the machine allows: Adam with linear learning-rate decay (after a
short warm-up), random crops, flips and 90-degree rotations, loss = Charbonnier + 0.01 * FFT-L1. Every step's
batch is a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen, and its
loss curve continues where it stopped.

    python -m training.train --run training/runs/mine --steps 20000   # a new run, or resume it
    python -m training.train --smoke                       # seconds: a tiny network, a few steps
    python -m training.train --run training/runs/mine --export banet/weights/banet_default.safetensors --force
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

try:  # a thin install (no torch, onnx...): one line naming what to install, not a traceback
    import numpy as np
    import torch

    from banet.checkpoint import (
        CheckpointError,
        CheckpointMismatchError,
        LoadedCheckpoint,
        save_checkpoint,
        weights_name_problem,
    )
    from banet.cli_types import number, path_arg, threads
    from banet.config import BANetConfig
    from banet.defaults import DEFAULT_CONFIG
    from banet.errors import first_line
    from banet.machine import physical_memory, usable_cpus
    from banet.model import BANet, count_parameters
    from banet.outputs import (
        check_not_input,
        check_output,
        write_atomic,
        write_error,
    )
    from banet.processing import preprocess
    from banet.torch_backend import cpu_bf16_units
    from training.losses import deblur_loss, harm_penalty
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "python -m training.train")
    raise

log = logging.getLogger(__name__)

DEFAULT_RUN = Path("training") / "runs" / "default"  # under the current project
#: Where ``--smoke`` runs when no ``--run`` is given: scratch, never the default model's committed run.
SMOKE_RUN = Path("out/smoke_run")


class TrainError(ValueError):
    """A run that cannot be trained, resumed or exported as asked (a corrupt ``last.pt``, a run folder that is a
    file, another run's options, a failed save): the message is one line naming the file and what to do."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP: :mod:`runtime.stop_signals`) during training; the message says which step
    ``last.pt`` holds (the run resumes from there); ``exit_status`` is 130, 143 or 129."""

    def __init__(self, message: str, exit_status: int = 130) -> None:
        super().__init__(message)
        self.exit_status = exit_status


#: The :class:`TrainConfig` fields that define a run: its network, data stream and recipe. A resume with another
#: value of one is refused (:meth:`TrainConfig.same_run`); the others (the schedule, the loss weights, the
#: evaluations) may change, and a change is logged and recorded in the history (:data:`RESUME_CHANGES`).
RUN_KEYS = ("model", "seed", "crop", "batch", "recipe", "augment", "sample_by")
#: Fields a resumed session may change, compared with the stored run to log and record what changed.
RESUME_CHANGES = ("steps", "lr", "warmup", "final_lr_ratio", "grad_clip", "harm_weight", "fft_weight", "eval_every",
                  "save_every", "eval_images")


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoint so a resume cannot silently change recipe.

    ``recipe`` names the blur distribution (:data:`calibration.blur.RECIPES`); ``init_steps`` is how many steps
    the weights a fine-tune started from had already had (0 for a run from scratch). ``harm_weight`` scales
    :func:`training.losses.harm_penalty` (0: the authors' loss alone). ``fft_weight`` is the authors' 0.01 on
    the FFT-L1 term; for the same per-pixel error that term grows in proportion to the crop side (an
    unnormalised FFT coefficient sums every pixel), so 256 px crops weigh it 2.7x more than 96 px crops did.
    ``augment`` adds :data:`training.photos.DEFAULT_AUGMENT` (wider scale range, exposure and white-balance
    jitter of the sharp photo before the blur). ``sample_by`` picks each crop's photo uniformly (``photo``) or
    in proportion to its pixel count (``area``; :func:`training.photos.sampling_weights`). ``minutes`` is set
    by a time-budgeted run (``--minutes``): the budget ``steps`` was sized for, after measuring the step rate; a
    resumed run keeps that decided ``steps``.
    ``replan_step``/``replan_factor``: where a budgeted run that fell behind (a shared machine got slower)
    re-planned its decay: from that step the learning-rate factor goes linearly from ``replan_factor`` (its
    value there, so the rate does not jump) to the floor at the new ``steps``.
    """

    model: BANetConfig = field(default_factory=lambda: DEFAULT_CONFIG)
    steps: int = 20000
    batch: int = 8
    crop: int = 96
    lr: float = 3e-4
    final_lr_ratio: float = 0.05
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    save_every: int = 100
    eval_images: int = 26
    recipe: str = "trajectory"
    init_steps: int = 0
    harm_weight: float = 0.0
    fft_weight: float = 0.01
    augment: bool = False
    sample_by: str = "photo"
    minutes: float | None = None
    replan_step: int | None = None
    replan_factor: float = 1.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    def same_run(self, other: TrainConfig) -> bool:
        """Whether ``other`` continues this run: same network, data stream and recipe. The schedule (steps,
        learning rate) may change on resume, as a shortened or extended run needs."""
        return not self.differences(other, RUN_KEYS)

    def differences(self, other: TrainConfig, keys: tuple[str, ...] | None = None) -> dict[str, tuple]:
        """``{field: (this value, other's value)}`` for the fields of ``keys`` (default: all) that differ."""
        keys = keys if keys is not None else tuple(f for f in asdict(self) if f != "model") + ("model",)
        return {k: (getattr(self, k), getattr(other, k)) for k in keys if getattr(self, k) != getattr(other, k)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["model"] = BANetConfig.from_dict(data["model"])
        return cls(**data)


def describe_differences(stored: TrainConfig, given: TrainConfig, keys: tuple[str, ...] = RUN_KEYS) -> str:
    """``crop 192 in the run, 96 given; ...`` for the run-defining fields where ``given`` differs from ``stored``:
    what a refused resume names, instead of printing both whole configurations."""
    def shown(value: object) -> str:
        return value.describe() if isinstance(value, BANetConfig) else repr(value)

    differences = stored.differences(given, keys)
    return "; ".join(f"{k} {shown(a)} in the run, {shown(b)} given" for k, (a, b) in differences.items())


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then linear decay to ``final_lr_ratio`` at ``steps`` (the authors decay linearly); after a
    re-plan (see :class:`TrainConfig`), linear from the factor at ``replan_step`` to the floor at ``steps``."""
    if config.replan_step is not None and step >= config.replan_step:
        progress = min(1.0, (step - config.replan_step) / max(1, config.steps - config.replan_step))
        return config.replan_factor + (config.final_lr_ratio - config.replan_factor) * progress
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return 1.0 - (1.0 - config.final_lr_ratio) * progress


def to_network(images_rgb01: np.ndarray, device: torch.device) -> torch.Tensor:
    """NHWC RGB [0, 1] float batch -> network input tensor, through the one pre-processing implementation."""
    batch, _ = preprocess(images_rgb01, channel_order="RGB", pad=False)
    return torch.from_numpy(batch).to(device)


BatchSource = Callable[[int], tuple[np.ndarray, np.ndarray]]


class PhotoBatches:
    """Batch ``step`` of a run: (blurred, sharp) NHWC RGB float32 crops, a pure function of (seed, step).

    A plain picklable object (not a closure), so DataLoader worker processes can call it: every worker computes
    exactly the bytes the training process would have (:func:`batch_stream`).
    """

    def __init__(self, photos: list[np.ndarray], config: TrainConfig) -> None:
        from calibration.blur import RECIPES
        from training.photos import DEFAULT_AUGMENT, sampling_weights

        if config.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {config.recipe!r}; choose one of {sorted(RECIPES)}")
        self.photos, self.blur = photos, RECIPES[config.recipe]
        self.crop, self.batch, self.seed = config.crop, config.batch, config.seed
        self.augment = DEFAULT_AUGMENT if config.augment else None
        self.weights = sampling_weights(photos, config.sample_by)
        #: where the photos came from (:func:`training.photos.photo_source`), recorded in the run's history
        self.photo_source: dict | None = None

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        from training.photos import make_training_batch

        rng = np.random.default_rng([self.seed, step])
        return make_training_batch(self.photos, self.crop, self.batch, rng, self.blur, augment=self.augment,
                                   weights=self.weights)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               config: TrainConfig, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One optimizer step on a batch (network-layout tensors): forward under autocast, the loss (plus the
    do-no-harm penalty when weighted), backward (fp16 loss scaling, unscaled before clipping), gradient-norm
    clipping and Adam. Returns the loss; :func:`train` and :mod:`training.step_rate` both run exactly this."""
    device_type = x.device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        output = model(x)
        loss = deblur_loss(output, y, config.fft_weight)
        if config.harm_weight:
            loss = loss + config.harm_weight * harm_penalty(output, y, x)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss


def default_batch_source(config: TrainConfig) -> BatchSource:
    """Batches of (blurred, sharp) NHWC RGB float32 crops from the training photos, a pure function of step."""
    from calibration.blur import RECIPES
    from training.photos import load_training_photos, photo_source, training_photo_files

    if config.recipe not in RECIPES:  # before spending seconds decoding photos
        raise ValueError(f"unknown recipe {config.recipe!r}; choose one of {sorted(RECIPES)}")
    files = training_photo_files()
    source = PhotoBatches(load_training_photos(files), config)
    source.photo_source = photo_source(files)
    log.info("training on %d photos (%s), recipe %s, augment %s, sampled by %s", len(source.photos),
             source.photo_source, config.recipe, config.augment, config.sample_by)
    return source


class _StepDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``k`` is ``source(k)``: the DataLoader's sampler hands out step indices."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self.source(int(step))


def _as_is(batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return batch


#: Batches each worker computes ahead (the DataLoader's prefetch_factor).
PREFETCH = 4


def batch_stream(source: BatchSource, start: int, workers: int = 0,
                 prefetch: int = PREFETCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless stream of ``source(start)``, ``source(start + 1)``, ...: in this process (``workers=0``) or computed
    ahead by a pool of ``workers`` processes (a torch DataLoader whose sampler yields step indices, in order).
    Batch k is ``source(k)`` whatever the worker count, so runs stay reproducible and resumable."""
    if workers <= 0:
        yield from (source(step) for step in itertools.count(start))
        return
    # Workers start from a fresh server process (forkserver), not forked from this one: a fork copies a process
    # that holds other libraries' thread pools (OpenVINO, ONNX Runtime, CUDA on a GPU), which is unsafe (one full
    # test run in three crashed in the worker-pool test with fork); the dataset is pickled to them instead.
    context = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    loader = torch.utils.data.DataLoader(_StepDataset(source), batch_size=None, sampler=itertools.count(start),
                                         num_workers=workers, collate_fn=_as_is, prefetch_factor=prefetch,
                                         multiprocessing_context=context)
    yield from loader


def _header_run(header: dict[str, str], path: Path) -> tuple[TrainConfig, int] | None:
    """(the run's config, its step) recorded in the header of weights that ``export_weights`` wrote, or None (other
    weights, or a record that cannot be read: then they are weights to fine-tune from, as any others)."""
    stored = header.get("banet.train_config")
    if not stored or "banet.run_step" not in header:
        return None
    try:
        return TrainConfig.from_dict(json.loads(stored)), int(header["banet.run_step"])
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("%s: its training record cannot be read (%s); treating it as weights to fine-tune from", path,
                    first_line(exc))
        return None


def load_init_weights(path: Path, config: TrainConfig) -> LoadedCheckpoint:
    """``--init-from`` weights loaded into ``config``'s network: a missing file, a file that is not a checkpoint
    (an ONNX model...) or weights of another network is a one-line :class:`TrainError`, naming the network the
    file holds when it is a BANet (before, the checkpoint reader's own exception, as a traceback)."""
    from banet.checkpoint import infer_config, load_checkpoint, read_state_dict

    try:
        return load_checkpoint(path, config=config.model)
    except CheckpointMismatchError as exc:
        hint = ""
        with contextlib.suppress(CheckpointError, OSError):
            other = infer_config(read_state_dict(path)[0])
            hint = f"; it holds {other.describe()}" + ("" if other.ba_fuse_full else (
                f": train that network with --num-bams {other.num_bams} --widths {other.dim_1},{other.dim_2}"))
        raise TrainError(f"--init-from {path}: its weights do not fit {config.model.describe()}{hint}") from exc
    except (CheckpointError, OSError) as exc:
        raise TrainError(f"--init-from {first_line(exc)}") from exc


def _start_from_weights(path: Path, model: BANet, config: TrainConfig, run_dir: Path) -> tuple[int, list[dict]]:
    """Initialise ``model`` from a shipped checkpoint when there is no ``last.pt`` (optimizer state is rebuilt).

    If the checkpoint was exported from this very run (same recipe, as its header records), training resumes
    at the step it records, with the run's committed ``history.jsonl``; otherwise it is a fine-tune from step 0.
    """
    loaded = load_init_weights(path, config)
    model.load_state_dict(loaded.model.state_dict())
    header = loaded.metadata
    recorded = _header_run(header, path)
    if recorded is not None and recorded[0].same_run(config):
        step = recorded[1]
        history = read_history(run_dir / "history.jsonl")
        later = [e for e in history if e["step"] > step]
        if later:  # the run went on past these weights: those entries describe training this resume redoes
            log.warning("%s holds %d entries past step %d (up to step %d), logged after these weights were "
                        "exported; they are replaced as the run trains again from step %d", run_dir / "history.jsonl",
                        len(later), step, later[-1]["step"], step)
        log.info("resuming %s at step %d from %s (optimizer state rebuilt)", run_dir, step, path)
        return step, [e for e in history if e["step"] <= step]
    log.info("fine-tuning from %s (%s steps before this run)", path, header.get("banet.trained_steps", "?"))
    return 0, []


def _steps_before_run(weights: Path, config: TrainConfig) -> int:
    """Steps the weights had before this run: all of their steps for a fine-tune, or, when they were exported
    by this very run (same recipe, see :meth:`TrainConfig.same_run`), the steps its start had. Weights that do
    not fit ``config``'s network, or no weights at all, are a one-line :class:`TrainError`."""
    header = load_init_weights(weights, config).metadata
    recorded = _header_run(header, weights)
    if recorded is not None and recorded[0].same_run(config):
        return recorded[0].init_steps
    try:
        return int(header.get("banet.trained_steps", 0))
    except ValueError:
        log.warning("%s: banet.trained_steps %r is not a number; counting 0 steps before this run", weights,
                    header["banet.trained_steps"])
        return 0


def read_history(path: Path) -> list[dict]:
    """The entries of a run's ``history.jsonl`` ([] when there is none).

    A run killed while the file was written (before it was written whole, see :func:`_save_state`) can leave a
    cut-short last line: it is dropped with a warning, as the entries it held are in ``last.pt`` or will be
    logged again. Anything else that is not one JSON object with a ``step`` per line is a :class:`TrainError`
    naming the line, never a traceback from the JSON parser or a silently wrong history.
    """
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"{path}: cannot read the run's history ({first_line(exc)})") from exc
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    entries = []
    for i, line in numbered:
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise ValueError("not a history entry (a JSON object with a step)")
        except ValueError as exc:
            if (i, line) == numbered[-1] and not line.rstrip().endswith("}"):
                log.warning("%s: dropping its cut-short last line %d (a run stopped while writing it)", path, i)
                break
            raise TrainError(f"{path}: line {i} is not a history entry ({first_line(exc)}); fix or remove that "
                             "line, or move the file away to start the history again") from exc
        entries.append(entry)
    return entries


def _short_reason(exc: BaseException) -> str:
    """``Type: first sentence`` of a library's error (torch's run on for lines about its own versions)."""
    reason = first_line(exc).split(". ")[0]
    return type(exc).__name__ if reason == type(exc).__name__ else f"{type(exc).__name__}: {reason}"


#: What a ``last.pt`` written by :func:`_save_state` holds.
STATE_KEYS = ("model_state", "optimizer_state", "step", "train_config", "history")


def load_state(path: Path, device: torch.device | str = "cpu") -> tuple[dict, TrainConfig, list[dict]]:
    """(the state, its config, its history) of a run's ``last.pt``; a file that is empty, cut short, corrupt or
    not one this module wrote is a one-line :class:`TrainError` saying what to do, never torch's traceback."""
    fix = "move it away to start over, or to resume from the run's exported weights (--init-from)"
    if path.is_dir():
        raise TrainError(f"{path} is a directory, not a training state; {fix}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on damaged bytes; all mean the same to a user
        # permissions, I/O errors: not the bytes (EINVAL is torch's zip reader meeting a cut-short file)
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
            raise TrainError(f"cannot read {path}: {exc.strerror or exc}") from exc
        raise TrainError(f"{path} is empty, cut short or corrupt ({_short_reason(exc)}); {fix}") from exc
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainError(f"{path} is not a training state written by training.train (it lacks "
                         f"{', '.join(missing)}); {fix}")
    try:
        config = TrainConfig.from_dict(json.loads(state["train_config"]))
        history = json.loads(state["history"])
        int(state["step"])
    except (ValueError, TypeError, KeyError) as exc:
        raise TrainError(f"{path}: unreadable training record ({type(exc).__name__}: {first_line(exc)}); "
                         f"{fix}") from exc
    return state, config, history


def check_run_dir(run_dir: Path) -> None:
    """Refuse (one-line :class:`TrainError`) a ``--run`` that is a file, cannot be created or is not writable,
    before any work: otherwise the first save, minutes or hours in, would fail with the steps since lost."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--run {run_dir} is a file, not a run folder; give a folder (created if missing)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}") from exc
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise TrainError(f"the run folder {run_dir} is not writable (last.pt and history.jsonl are saved there)")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the run folder for a session: a second session on the same run (another
    terminal) would replace ``last.pt`` and ``history.jsonl`` in turn with its own, so it is refused in one line.
    The kernel drops the lock of a killed process, so it is never stale; nothing is written for it. Where
    ``fcntl`` is missing (Windows) sessions are not locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainError(f"another training session is running in {run_dir}; wait for it to end (or stop it), "
                             "or use another --run folder") from None
        yield
    finally:
        os.close(fd)  # releases the flock


def _save_state(path: Path, model: BANet, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig,
                history: list[dict]) -> None:
    """Write ``last.pt`` and ``history.jsonl`` each whole or not at all (:func:`banet.outputs.write_atomic`): a
    run killed (Ctrl-C, a full disk, a crash) while saving keeps its previous state and history, and no half file
    is ever left under either name (torch.save straight to a file, or a plain rewrite of the history, could)."""
    buffer = io.BytesIO()
    torch.save({"model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(), "step": step,
                "train_config": json.dumps(config.to_dict()), "history": json.dumps(history)}, buffer)
    data = buffer.getvalue()
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise TrainError(f"{write_error(exc, path, len(data))}; the previous {path.name} is kept (run again to "
                         "resume from it)") from exc
    history_file = path.parent / "history.jsonl"
    data = "".join(json.dumps(e) + "\n" for e in history).encode()
    try:
        write_atomic(history_file, data)
    except OSError as exc:
        raise TrainError(f"{write_error(exc, history_file, len(data))}; {path.name} holds step {step} and its "
                         "history (run again to resume)") from exc


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast pays off: the
    inference backend's own probe (:func:`banet.torch_backend.cpu_bf16_units`), so both decide alike."""
    return bool(cpu_bf16_units())


#: The ``--precision`` values: ``auto`` picks one of the others for the device (:func:`autocast_dtype`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision for training: fp16 on CUDA, bf16 on CPUs that have it (1.75x faster measured here).

    fp16 anywhere but CUDA is a one-line :class:`TrainError` naming bf16 and fp32: its small gradients underflow
    to zero without loss scaling (a CUDA ``GradScaler`` disables itself, with a warning, off CUDA, so such a run
    trained without it), and a CPU runs it slower than fp32 (no fp16 arithmetic: 0.87 s against 0.60 s per step
    here, bf16 0.25 s), while bf16 keeps float32's range (no scaler needed) and x86 CPUs with fp16 hardware
    (AVX-512 FP16, AMX-FP16) have bf16 too. ``torch.amp.GradScaler("cpu")`` would make it correct, not useful."""
    if precision not in PRECISIONS:
        raise TrainError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise TrainError(f"--precision fp16 is for CUDA GPUs, not {device.type}: without loss scaling its gradients "
                         "underflow, and a CPU runs it slower than fp32; use --precision bf16 (no loss scaling "
                         "needed; fast on CPUs with AVX-512 BF16 or AMX), fp32 or auto")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 autocast needs (None for fp32 and bf16, which keep float32's exponent range), made for
    ``device``'s own type: a scaler for another type disables itself and would scale nothing."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def worker_count(text: str) -> int:
    """argparse ``type`` of ``--workers``: 0 (batches made in the training process) up to :func:`usable_cpus`.
    Each worker is a process holding its own copy of the decoded photos, and workers beyond the CPUs make
    batches no faster, so a huge count only exhausted memory or the process table (it was not bounded)."""
    cpus = usable_cpus()
    try:
        return number(int, 0, cpus)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc} (0: batches made in the training process; at most the {cpus} CPU(s) this process may use: "
            "each worker is a process with its own copy of the decoded photos, and more make batches no "
            "faster)") from None


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:N``...; a name torch does not know, or CUDA on a
    machine without it, is a one-line :class:`TrainError` (torch's own errors list every backend it was built
    for, or fail deep in the first tensor's move)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise TrainError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


#: The longest training session the CLI runs (issue #33's discipline: each run resumable, its history committed
#: before the next starts).
MAX_SESSION_MINUTES = 60.0

#: A time-budgeted run skips this many steps (start-up), plus the batches a worker pool computes ahead
#: (``workers * PREFETCH``: served at GPU speed however slow the data is), before timing ...
PROBE_SKIP = 5
#: ... this many steps, to size its schedule.
PROBE_STEPS = 20
#: Share of the remaining budget the decided schedule fills: evaluations and the rate's drift take the rest.
BUDGET_SHARE = 0.93
#: A budgeted session whose recent rate would finish the schedule within this share of the time left (the
#: machine got faster again after a slow spell that shortened it), with at least two saves' worth of steps to
#: spare, re-plans a longer decay; between this and 1 the plan stands, so a steady rate never re-plans back and
#: forth.
AHEAD_SHARE = 0.8


def probe_window(step: int, workers: int) -> tuple[int, int]:
    """(first, last) step of the rate probe of a budgeted run starting at ``step``: after the start-up steps and
    after the batches the worker pool prefetched are used up, so a data-bound run is timed at its data rate."""
    first = step + PROBE_SKIP + max(0, workers) * PREFETCH
    return first, first + PROBE_STEPS


def decide_total_steps(step: int, steps_per_s: float, seconds_left: float, share: float = BUDGET_SHARE) -> int:
    """Total schedule length for a time-budgeted run: the current step plus what ``share`` of the time left
    holds at the measured rate (at least one more step)."""
    return step + max(1, int(steps_per_s * max(0.0, seconds_left) * share))


def check_memory(config: TrainConfig, total: int | None = None) -> None:
    """Refuse (one-line :class:`TrainError`, before any work) a ``--batch`` x ``--crop`` whose forward activations
    alone (:func:`banet.config.activation_bytes_per_pixel`, an inference peak: training keeps more for the
    backward pass) would not fit in this machine's memory: such a run swapped or was killed after decoding every
    photo. ``total`` defaults to :func:`physical_memory`."""
    from banet.config import activation_bytes_per_pixel

    total = physical_memory() if total is None else total
    need = config.batch * config.crop ** 2 * activation_bytes_per_pixel(config.model)
    if total and need > total:
        raise TrainError(f"--batch {config.batch} x --crop {config.crop} needs at least {need / 1e9:.3g} GB of "
                         f"working memory for {config.model.describe()}; this machine has {total / 1e9:.3g} GB: "
                         "use a smaller --batch or --crop")


def train(config: TrainConfig, run_dir: Path, batch_source: BatchSource | None = None, device: str = "auto",
          max_minutes: float | None = None, evaluate_fn: Callable[[BANet], dict] | None = None,
          progress: bool = True, stop_at: int | None = None, precision: str = "fp32",
          init_from: Path | None = None, workers: int = 0, minutes: float | None = None,
          clock: Callable[[], float] = time.monotonic) -> list[dict]:
    """Train (resuming from ``run_dir/last.pt`` when present) until ``config.steps`` or ``max_minutes``.

    ``workers``: processes computing batches ahead (:func:`batch_stream`; same batches as 0). ``minutes``: a
    time budget for a new run: the step rate is measured over ``PROBE_STEPS`` steps after the start-up and the
    worker pool's prefetched batches (:func:`probe_window`; inside the warm-up, which does not depend on the
    total; a shorter provisional ``steps`` is stretched to reach it), then ``steps`` is set so the linear
    decay reaches its floor at the deadline (:func:`decide_total_steps`) and stored in the run state; a resumed
    budgeted run keeps that total, and ``minutes`` is the session's deadline. At each save, a budgeted session
    whose recent rate cannot finish the schedule by its deadline (other work slowed the machine) re-plans:
    the rest of the decay is shortened to end at the deadline, continuing from the current learning rate, so a
    run stopped by time is never left at a high learning rate; one whose rate would finish well before it
    (:data:`AHEAD_SHARE`: the machine is free again) lengthens the decay the same way, up to the schedule the
    session started with (or decided), so a slow spell does not cost the rest of the budget and a resumed run
    never grows past its plan. ``clock`` is for tests.

    ``stop_at`` ends the session early at that step (saved, resumable) without changing the schedule.
    ``precision``: "fp32", "bf16", "fp16" or "auto" (mixed precision by :func:`autocast_dtype`); weights and
    optimizer state stay float32. A resumed run repeats its loss curve exactly only with the same precision.
    ``init_from``: a checkpoint to start from when ``run_dir`` has no ``last.pt`` (see
    :func:`_start_from_weights`): a fine-tune, or the resumption of this run from its exported weights.

    Returns the history: one entry per logged step with the loss, learning rate and any evaluation.

    The run folder is checked first (:func:`check_run_dir`) and locked for the session (:func:`run_lock`); a
    ``last.pt`` that cannot be resumed, another run's options or a history without its state are a
    :class:`TrainError`, and Ctrl-C a :class:`TrainingInterrupted` saying which step ``last.pt`` holds.
    """
    autocast_dtype(pick_device(device), precision)  # a wrong device or precision: one line, before the run folder
    check_memory(config)
    check_run_dir(run_dir)
    with run_lock(run_dir):
        return _train_session(config, run_dir, batch_source, device, max_minutes, evaluate_fn, progress, stop_at,
                              precision, init_from, workers, minutes, clock)


def _train_session(config: TrainConfig, run_dir: Path, batch_source: BatchSource | None, device: str,
                   max_minutes: float | None, evaluate_fn: Callable[[BANet], dict] | None, progress: bool,
                   stop_at: int | None, precision: str, init_from: Path | None, workers: int,
                   minutes: float | None, clock: Callable[[], float]) -> list[dict]:
    """One session of :func:`train` in its checked, locked run folder."""
    # Long by design (~90 lines): the training loop reads top to bottom (resume, step, log, evaluate, save).
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    dev = pick_device(device)
    state_path = run_dir / "last.pt"
    model = BANet(config.model).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, history, changed = 0, [], {}
    if state_path.exists():
        state, stored, history = load_state(state_path, dev)
        if not stored.same_run(config):
            raise TrainError(f"{state_path} is another run ({describe_differences(stored, config)}); refusing to "
                             "resume it with other data or another network: leave those options out (the run's "
                             "own are used) or use another --run folder for a different recipe")
        config = replace(config, init_steps=stored.init_steps)  # what this run started from is the run's record
        if stored.minutes is not None:  # a time-budgeted run: its decided schedule is part of the run
            if config.steps != stored.steps and config.minutes is None:  # --steps given to extend it: not used
                log.warning("--steps %d is not used: this run's schedule was decided for %g minutes (%d steps), "
                            "its learning rate decaying to the end; to train further, start a new run from its "
                            "exported weights (--export, then --init-from)", config.steps, stored.minutes,
                            stored.steps)
            config = replace(config, steps=stored.steps, minutes=stored.minutes, replan_step=stored.replan_step,
                             replan_factor=stored.replan_factor)
            log.info("keeping the schedule decided for %g minutes: %d steps", stored.minutes, stored.steps)
        try:
            model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # tensors that do not match its own record
            raise TrainError(f"{state_path}: its weights or optimizer state do not fit the network it records "
                             f"({first_line(exc)}); move it away to start over, or to resume from the run's "
                             "exported weights (--init-from)") from exc
        step = int(state["step"])
        # A resumed run may change its schedule, loss weights or evaluations; a change is said, and recorded in
        # the history, so the run's record (which stores only the latest options) does not hide it.
        changed = {k: [a, b] for k, (a, b) in stored.differences(config, RESUME_CHANGES).items()}
        if changed:
            log.warning("resuming %s with changed options: %s", state_path,
                        ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        log.info("resumed %s at step %d", state_path, step)
    elif init_from is not None:
        step, history = _start_from_weights(init_from, model, config, run_dir)
    if step == 0:
        # A new run would replace history.jsonl at its first save: a run whose last.pt was removed (git keeps only
        # its history and exported weights) must be resumed from those weights, never silently started over.
        earlier = read_history(run_dir / "history.jsonl")
        if earlier:
            raise TrainError(f"{run_dir / 'history.jsonl'} holds {len(earlier)} logged step(s) (up to step "
                             f"{earlier[-1]['step']}) of a run that has no last.pt here; resume it with --init-from "
                             "its exported weights (the same options), or train in another --run folder (refusing "
                             "to start over that history)")
    saved = step if state_path.exists() else None  # the step last.pt holds, for the message on Ctrl-C
    if step >= config.steps:
        extend = ("a new run from its exported weights (--export, then --init-from) trains further: its schedule "
                  f"was sized for {config.minutes:g} minutes" if config.minutes is not None else
                  "give a larger --steps to extend it")
        log.info("%s is at step %d, at or past --steps %d: nothing to train (%s)", run_dir, step, config.steps,
                 extend)
    if batch_source is None:
        batch_source = default_batch_source(config)
    amp_dtype = autocast_dtype(dev, precision)
    scaler = grad_scaler(dev, amp_dtype)
    log.info("%s, %d parameters, on %s, autocast %s", config.model.describe(), count_parameters(model), dev,
             amp_dtype or "off")

    deciding = minutes is not None and config.minutes is None
    if not deciding and step < config.steps <= config.warmup:
        log.warning("--steps %d ends inside the warm-up (--warmup %d): the learning rate never decays; it ends at "
                    "%.0f%% of --lr", config.steps, config.warmup,
                    100 * learning_rate_factor(config.steps - 1, config))
    if minutes is not None:
        max_minutes = minutes if max_minutes is None else min(max_minutes, minutes)
        if deciding and step < config.warmup < probe_window(step, workers)[1]:  # (a warm-up already over: nothing)
            log.warning("warm-up (%d steps) ends before the step rate is measured: the first steps' learning "
                        "rate follows the provisional --steps %d", config.warmup, config.steps)
    probe_start, probe_end = probe_window(step, workers)
    if deciding and config.steps <= probe_end:
        log.info("provisional --steps %d ends before the step rate is measured (step %d): provisional length "
                 "%d until then", config.steps, probe_end, probe_end + 1)
        config = replace(config, steps=probe_end + 1)
    session_entry = {"photos": getattr(batch_source, "photo_source", None), "workers": workers}
    if changed:
        session_entry["changed"] = changed
    planned = config.steps  # the schedule this session started with (or decided): a re-plan never lengthens past it
    started = clock()
    probe_time = 0.0
    running = []
    last_entry_time, last_entry_step = started, step
    bar = tqdm(total=config.steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    model.train()
    try:
        with contextlib.closing(batch_stream(batch_source, step, workers)) as batches:  # closing ends a pool
            while step < (min(config.steps, stop_at) if stop_at is not None else config.steps):
                if deciding and step == probe_start:
                    probe_time = clock()
                if deciding and step == probe_end:
                    rate = PROBE_STEPS / max(1e-9, clock() - probe_time)
                    total = decide_total_steps(step, rate, minutes * 60 - (clock() - started))
                    config = replace(config, steps=total, minutes=minutes)
                    deciding, planned = False, total
                    bar.total = total
                    bar.refresh()
                    log.info("%.3f steps/s over steps %d-%d: %d steps fill %g minutes; the learning rate reaches "
                             "its floor at step %d", rate, probe_start, step, total, minutes, total)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * learning_rate_factor(step, config)
                blurred, sharp = next(batches)
                loss = train_step(model, optimizer, to_network(blurred, dev), to_network(sharp, dev), config,
                                  amp_dtype, scaler)
                step += 1
                if not math.isfinite(loss.item()):
                    kept = f"{state_path} keeps step {saved}" if saved is not None else "nothing was saved"
                    raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr ({kept})")
                running.append(loss.item())
                bar.update(1)
                evaluate_now = evaluate_fn is not None and (step % config.eval_every == 0
                                                            or step == config.steps)
                end = min(config.steps, stop_at) if stop_at is not None else config.steps
                out_of_time = max_minutes is not None and (clock() - started) / 60 > max_minutes
                # --eval-every need not be a multiple of --save-every; a session out of time saves where it stops
                if step % config.save_every == 0 or step == end or evaluate_now or out_of_time:
                    now = clock()
                    entry = {"step": step, "loss": float(np.mean(running)),
                             "lr": optimizer.param_groups[0]["lr"],
                             "steps_per_s": round((step - last_entry_step) / max(1e-9, now - last_entry_time),
                                                  4)}
                    running = []
                    if session_entry is not None:  # what this session trained on, once per session
                        entry["session"], session_entry = session_entry, None
                    if evaluate_now:
                        model.eval()
                        entry.update(evaluate_fn(model))
                        model.train()
                    history.append(entry)
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", **({"gain_db": f"{entry['psnr_gain']:.2f}"}
                                                                      if "psnr_gain" in entry else {}))
                    log.info("step %d: %s", step, json.dumps(entry))
                    _save_state(state_path, model, optimizer, step, config, history)
                    saved = step
                    if minutes is not None and not deciding and step < end:
                        rate = entry["steps_per_s"]
                        seconds_left = minutes * 60 - (clock() - started)
                        needed = (config.steps - step) / rate if rate > 0 else math.inf
                        spare = seconds_left - needed  # idle time the plan leaves: worth re-planning for when it
                        # holds a share of what is left and at least two more saves' worth of steps
                        behind = needed > seconds_left
                        ahead = (spare > (1 - AHEAD_SHARE) * seconds_left
                                 and spare * rate > 2 * config.save_every)
                        total = decide_total_steps(step, rate, seconds_left) if rate > 0 else config.steps
                        total = min(total, planned)
                        if (behind and total < config.steps) or (ahead and total > config.steps):
                            log.info("%s schedule at %.3f steps/s: the decay now ends at step %d instead of %d "
                                     "(the deadline)", "behind" if behind else "ahead of", rate, total,
                                     config.steps)
                            config = replace(config, steps=total, replan_step=step,
                                             replan_factor=learning_rate_factor(step, config))
                            bar.total = total
                            _save_state(state_path, model, optimizer, step, config, history)
                    last_entry_time, last_entry_step = clock(), step
                    if out_of_time:
                        log.info("stopping after %.1f minutes at step %d (resume by running again)", max_minutes,
                                 step)
                        break
    except KeyboardInterrupt as exc:
        # Not saved here: Ctrl-C may have stopped the optimizer half way through a step. The last save stands.
        from runtime.stop_signals import Terminated

        kept = f"{state_path} holds step {saved}" if saved is not None else "nothing was saved yet (no last.pt)"
        what, status = (f"terminated ({exc.name})", exc.exit_status) if isinstance(exc, Terminated) else \
            ("interrupted (Ctrl-C)", 130)
        raise TrainingInterrupted(f"{what} at step {step}: {kept}; run the same command to resume",
                                  status) from None
    bar.close()
    model.eval()
    return history


def export_weights(run_dir: Path, output: Path, overwrite: bool = False) -> Path:
    """Write the run's latest weights in our safetensors format, with how they were trained in the header.

    Refused in one line (:class:`TrainError`) before anything is written: a run without a readable ``last.pt``,
    an ``output`` that is one of the run's own files (``last.pt``, ``history.jsonl``: even with ``overwrite``, as
    the run could no longer resume) or a folder; an existing ``output`` without ``overwrite`` is
    ``FileExistsError``. The file is written whole under a temporary name and renamed (Ctrl-C or a full disk
    leave the previous file, and no half file, under ``output``).
    """
    state_path = Path(run_dir) / "last.pt"
    output = Path(output)
    if not state_path.exists():
        raise TrainError(f"{state_path} not found: --run {run_dir} has no training state to export")
    check_not_input(output, {"the run's training state": state_path,
                             "the run's history": Path(run_dir) / "history.jsonl"}, error=TrainError,
                    option="--export")
    if not output.is_dir() and (problem := weights_name_problem(output)) is not None:  # a folder: named below
        raise TrainError(f"--export {problem}")
    if output.is_file() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    check_output(output, force=True, error=TrainError, suffix=".safetensors", option="--export")
    state, config, history = load_state(state_path)
    model = BANet(config.model)
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"{state_path}: its weights do not fit the network it records ({first_line(exc)})") from exc
    evals = [e for e in history if isinstance(e, dict) and "psnr_gain" in e]
    metadata = {"banet.trained_steps": str(config.init_steps + int(state["step"])),
                "banet.run_step": str(state["step"]), "banet.train_config": json.dumps(config.to_dict()),
                "banet.description": "banet-deploy default: small BANet trained on synthetic motion blur of real "
                                     "photographs (not the authors' GoPro model)"}
    if evals:
        metadata["banet.last_eval"] = json.dumps(evals[-1])
    try:  # whole or not at all (save_checkpoint writes through banet.outputs.write_atomic)
        save_checkpoint(model, output, metadata=metadata, overwrite=True)
    except OSError as exc:
        raise TrainError(f"{write_error(exc, output)}; nothing written to {output}") from exc
    return output


#: Header entries a checkpoint made from another one (grown, blended) carries over from its source.
CARRIED_METADATA = ("banet.trained_steps", "banet.description")


def carried_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The entries of a source checkpoint's header that a checkpoint derived from it keeps
    (:data:`CARRIED_METADATA`); the deriving tool adds its own line saying how it was made."""
    return {k: v for k, v in metadata.items() if k in CARRIED_METADATA}


def load_option_checkpoint(option: str, path: Path) -> LoadedCheckpoint:
    """The checkpoint that the command-line ``option`` (``--weights``, ``--base``...) names; where it cannot be
    used (missing, an ONNX model, not a checkpoint, another network, unreadable), one :class:`TrainError` line
    naming the option: the checkpoint reader's own message, or why the file cannot be read."""
    from banet.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise TrainError(f"{option} {first_line(exc)}") from None
    except OSError as exc:  # permissions, an I/O error
        raise TrainError(f"{option} {path}: cannot read it ({exc.strerror or first_line(exc)})") from None


def parse_widths(text: str) -> tuple[int, int]:
    """``--widths`` ("32,64") as (dim_1, dim_2); ValueError with the one-line message the CLIs print."""
    try:
        dim_1, dim_2 = (int(v) for v in text.split(","))
        if dim_1 < 1 or dim_2 < 2 or dim_2 % 2:  # dim_2 odd: BANetConfig refused it, naming no option
            raise ValueError
    except ValueError:
        raise ValueError(f"--widths must be two positive integers dim_1,dim_2 with dim_2 even (e.g. 32,64), not "
                         f"{text!r}") from None
    return dim_1, dim_2


#: The command line's options that set a :class:`TrainConfig` field (``--widths``/``--num-bams`` set the model).
#: Left out, they keep a resumed run's own values (from its ``last.pt``), else the defaults: resuming with the
#: plain command no longer resets a run's --lr, --warmup or loss weights, or is refused for its --crop.
CONFIG_OPTIONS = ("steps", "batch", "crop", "lr", "seed", "recipe", "harm_weight", "fft_weight", "eval_images",
                  "warmup", "eval_every", "augment", "sample_by")


def _cli_config(args: argparse.Namespace, stored: TrainConfig | None) -> TrainConfig:
    """The run's configuration from the options given, over the resumed run's (``stored``) or the defaults."""
    base = stored or TrainConfig()
    model = base.model
    if args.num_bams is not None or args.widths is not None:
        dim_1, dim_2 = parse_widths(args.widths) if args.widths is not None else (model.dim_1, model.dim_2)
        model = replace(model, num_bams=args.num_bams or model.num_bams, dim_1=dim_1, dim_2=dim_2)
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    return replace(base, model=model, **given)


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 done, 1 a refused or failed run (one ``error:`` line), 2 a bad option,
    130 interrupted (Ctrl-C; the run resumes from its last save)."""
    from calibration.blur import RECIPES
    from training.photos import SAMPLING, crop_size

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="A run resumed from its last.pt keeps its own value of every option left "
                                            "out;\nthe values in parentheses are a new run's defaults.")
    parser.add_argument("--run", type=path_arg, default=None,
                        help=f"run directory holding last.pt (resumed if present) and history.jsonl (default "
                             f"{DEFAULT_RUN}; with --smoke {SMOKE_RUN})")
    parser.add_argument("--steps", type=number(int, 1), default=None,
                        help=f"total steps of the schedule (the lr decays linearly to the end; {defaults.steps})")
    parser.add_argument("--batch", type=number(int, 1), default=None, help=f"crops per step ({defaults.batch})")
    parser.add_argument("--crop", type=crop_size, default=None,
                        help=f"crop size in pixels, even ({defaults.crop})")
    parser.add_argument("--lr", type=number(float, 0, low_open=True), default=None,
                        help=f"peak Adam learning rate ({defaults.lr:g})")
    parser.add_argument("--num-bams", type=number(int, 1), default=None,
                        help=f"blur-aware modules ({DEFAULT_CONFIG.num_bams})")
    parser.add_argument("--widths", default=None,
                        help=f"dim_1,dim_2 widths (64,128 is the paper's network; {DEFAULT_CONFIG.dim_1},"
                             f"{DEFAULT_CONFIG.dim_2})")
    parser.add_argument("--seed", type=number(int, 0), default=None,
                        help="seed of the data stream and initial weights (0)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="blur distribution: trajectory (camera shake only; the default), do-no-harm (shake, "
                             "linear motion, sharp inputs, noise and JPEG) or do-no-harm-shake (the same families "
                             "with camera shake weighted up); see calibration/blur.py")
    parser.add_argument("--init-from", type=path_arg, default=None,
                        help="start from these weights when the run has no last.pt: a fine-tune, or the "
                             "resumption of this run from weights it exported (optimizer state rebuilt)")
    parser.add_argument("--harm-weight", type=number(float, 0), default=None,
                        help="weight of the do-no-harm penalty: the excess loss on crops the network made worse "
                             "than its input (0: off, the default)")
    parser.add_argument("--fft-weight", type=number(float, 0), default=None,
                        help="weight of the FFT-L1 loss term (the authors' 0.01; the term grows with --crop, so "
                             "large crops may want less, e.g. 0.004 at 256 px keeps the 96 px balance)")
    parser.add_argument("--eval-images", type=number(int, 1), default=None,
                        help="held-out crops per family in the evaluations logged during training (26: all)")
    parser.add_argument("--warmup", type=number(int, 0), default=None,
                        help=f"linear lr warm-up steps ({defaults.warmup})")
    parser.add_argument("--eval-every", type=number(int, 1), default=None,
                        help=f"steps between held-out evaluations (PSNR gain over the blurred input; "
                             f"{defaults.eval_every})")
    parser.add_argument("--max-minutes", type=float, default=MAX_SESSION_MINUTES,
                        help="stop (resumably, state saved) after this long; at most %(default)g: no training "
                             "session runs longer, so its history is committed before the next one starts")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time budget of a new run: measure the step rate over the first steps, then size "
                             "--steps so the learning rate reaches its floor at the deadline (stored in the run; "
                             "a resumed run keeps it); --steps is then only the provisional length")
    parser.add_argument("--workers", type=worker_count, default=0,
                        help=f"processes computing batches ahead (0: in the training process; at most the "
                             f"{usable_cpus()} CPUs this process may use); the same batches whatever the count")
    parser.add_argument("--augment", action="store_true", default=None,
                        help="photo augmentation before the blur: scale 0.35-1, exposure +-0.5 stop, white "
                             "balance +-12%% per channel (training.photos.DEFAULT_AUGMENT)")
    parser.add_argument("--sample-by", choices=SAMPLING, default=None,
                        help="pick each crop's photo uniformly (photo, the default) or in proportion to its pixel "
                             "count (area: large detailed photos are not outweighed by many small ones)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=threads(1), default=None,
                        help=f"CPU threads for PyTorch (at most {usable_cpus()})")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="mixed precision: auto = fp16 on CUDA, bf16 on CPUs with AVX-512 BF16/AMX, else fp32 "
                             "(fp16 is refused off CUDA: use bf16 or fp32)")
    parser.add_argument("--smoke", action="store_true", help="tiny network, 30 steps on 32x32 crops")
    parser.add_argument("--export", type=path_arg, default=None,
                        help="instead of training, write the run's latest weights to this safetensors file")
    parser.add_argument("--force", action="store_true", help="allow --export to overwrite an existing file")
    args = parser.parse_args(argv)
    if args.export is not None:  # the run's weights as they are: a training option would be ignored without a word
        ignored = [f"--{name.replace('_', '-')}" for name in (*CONFIG_OPTIONS, "num_bams", "widths", "init_from",
                                                              "minutes", "smoke")
                   if getattr(args, name, None) not in (None, False)]
        if ignored:
            parser.error(f"--export writes the run's latest weights as they are; {', '.join(ignored)} would be "
                         "ignored: leave them out (resume the run with them first, then export)")
    for name in ("minutes", "max_minutes"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= MAX_SESSION_MINUTES:
            parser.error(f"--{name.replace('_', '-')} must be more than 0 and at most {MAX_SESSION_MINUTES:g} "
                         "(resume the run for more)")
    if args.widths is not None:
        try:
            parse_widths(args.widths)
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from runtime.stop_signals import stop_signals_as_interrupts, stopped_line

    try:
        with stop_signals_as_interrupts():  # SIGTERM (timeout, a scheduler) and SIGHUP stop it as Ctrl-C does
            return _run(args, parser)
    except TrainingInterrupted as exc:  # it says which step last.pt holds
        print(str(exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt as exc:  # before the first step (SIGTERM printed only "15")
        return stopped_line(exc, "the run resumes from its last save")
    except (TrainError, CheckpointError, FileExistsError, FloatingPointError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # no training photos (with the install hint), a path the system refuses
        shown = first_line(exc) if exc.strerror is None else f"{exc.filename or args.run}: {exc.strerror}"
        print(f"error: {shown}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.run is None:  # a smoke run never lands in (or is refused by) the default model's committed run
        args.run = SMOKE_RUN if args.smoke else DEFAULT_RUN
    if args.export is not None:
        path = export_weights(args.run, args.export, overwrite=args.force)
        print(f"wrote {path}")
        return 0
    state_path = args.run / "last.pt"
    stored = load_state(state_path)[1] if state_path.is_file() and not args.smoke else None
    try:
        config = _cli_config(args, stored)
    except ValueError as exc:  # a network BANetConfig refuses (an odd dim_2)
        parser.error(first_line(exc))
    if args.smoke:
        config = TrainConfig(model=BANetConfig(2, 8, 16), steps=30, batch=4, crop=32, warmup=5, save_every=10,
                             eval_every=30, seed=args.seed or 0)
    if args.init_from is not None:  # checked before any work: a missing file, an ONNX, another network's weights
        config = replace(config, init_steps=_steps_before_run(args.init_from, config))
        if state_path.exists():
            log.warning("--init-from %s is not used: %s exists and is resumed", args.init_from, state_path)
    # a mistyped or absent device, fp16 on a CPU, a batch that cannot fit: one line before the photos are decoded
    autocast_dtype(pick_device(args.device), args.precision)
    check_memory(config)
    from training.evaluate import quick_evaluator

    train(config, args.run, device=args.device, max_minutes=args.max_minutes, workers=args.workers,
          minutes=args.minutes,
          evaluate_fn=quick_evaluator(config.eval_images), precision=args.precision, init_from=args.init_from)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
