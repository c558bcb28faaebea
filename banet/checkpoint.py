"""Checkpoint I/O: every layout found in the wild, our own safetensors format, and clear errors.

Layouts read (detected, never asked for):

* ``bare``: a state_dict saved with ``torch.save(model.state_dict())``;
* ``module-prefixed``: the same saved from ``nn.DataParallel`` (every key starts with ``module.``), which is
  what the authors' ``best_*.pth`` / ``final_*.pth`` and the released ``BANet_GoPro.pth`` are;
* ``model_state``: the authors' ``last_*.pth`` training snapshots (``{"model_state": ..., "epoch": ...}``);
* ``safetensors``: our own format, weights plus the :class:`~banet.config.BANetConfig` in the header, so the
  file says which network it is. A safetensors file without our header is read as a bare state_dict.

``.pth`` files are read with ``torch.load(weights_only=True)``: arbitrary pickled objects are refused. The
network configuration (number of BAMs, widths, BANet vs BANet+) is inferred from the tensors' shapes when the
file does not carry it, and reported. Every failure is a :class:`CheckpointError` naming the file and the
problem.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from banet.config import BANetConfig
from banet.errors import (  # noqa: F401  (re-exported: the checkpoint API raises them)
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    first_line,
)
from banet.hashing import file_sha256  # noqa: F401  (re-exported)
from banet.model import BANet

log = logging.getLogger(__name__)

FORMAT_TAG = "banet-deploy/1"
_KEY_FORMAT = "banet.format"
_KEY_CONFIG = "banet.config"
_LIST_LIMIT = 12


@dataclass
class LoadedCheckpoint:
    """A network loaded from a file, with what was learnt about the file on the way."""

    model: BANet
    config: BANetConfig
    layout: str
    path: Path
    sha256: str
    config_inferred: bool
    metadata: dict[str, str] = field(default_factory=dict)


def _short_list(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({exc})") from exc


def _read_torch(path: Path) -> object:
    try:
        with warnings.catch_warnings():  # torch's warnings name this line and its advice; the error below is one line
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise CheckpointFormatError(
                f"{path}: holds pickled Python objects other than tensors and plain containers; refusing to "
                "unpickle them (torch.load weights_only=True). Re-save just the state_dict.") from exc
        if (protocol := _plain_pickle_protocol(path)) is not None:
            raise CheckpointFormatError(
                f"{path}: a pickle (protocol {protocol}, as pickle.dump writes) rather than a torch.save file; "
                "re-save it with torch.save(state_dict, path)") from exc
        # torch's first line for foreign bytes is advice to unpickle them with weights_only=False (running any code
        # they hold): never passed on. Its reason is the line after "WeightsUnpickler error:".
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        marker = next((i for i, line in enumerate(lines) if line.endswith("WeightsUnpickler error:")), None)
        reason = lines[marker + 1] if marker is not None and marker + 1 < len(lines) else first_line(exc)
        if "weights_only" in reason:
            reason = "not a pickle of tensors"
        raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (unpickling failed: {reason})") from exc
    except Exception as exc:  # torch.load fails in many ways on foreign bytes; all mean the same to a user
        if _is_torchscript(path):
            raise CheckpointFormatError(
                f"{path}: a TorchScript archive (torch.jit.save), not a checkpoint of weights; save the model's "
                "weights instead: torch.save(model.state_dict(), path)") from exc
        raise CheckpointFormatError(
            f"{path}: truncated, corrupt or not a PyTorch checkpoint ({type(exc).__name__}: {first_line(exc)})"
        ) from exc


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip whose records include ``constants.pkl`` (torch.jit.save's;
    a torch.save zip has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _plain_pickle_protocol(path: Path) -> int | None:
    """The protocol of a file that starts as a pickle of protocol 3 or later (pickle.dump's default is 4 or 5;
    torch.save's non-zip format writes protocol 2), else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 and 3 <= head[1] <= pickle.HIGHEST_PROTOCOL else None


def _extract_state_dict(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    layout = "bare"
    if isinstance(obj, dict) and isinstance(obj.get("model_state"), dict):
        obj, layout = obj["model_state"], "model_state"
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, layout = obj["state_dict"], "state_dict"
    if not isinstance(obj, dict) or not obj:
        kind = type(obj).__name__ if not isinstance(obj, dict) else "an empty dict"
        raise CheckpointFormatError(f"{path}: not a checkpoint: it holds {kind}, not a state_dict of tensors")
    odd_keys = [repr(k) for k in obj if not isinstance(k, str)]
    if odd_keys:
        raise CheckpointFormatError(f"{path}: not a state_dict: keys that are not parameter names: "
                                    f"{_short_list(odd_keys)}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointFormatError(
            f"{path}: not a state_dict: entries that are not tensors: {_short_list(not_tensors)}")
    keys = [str(k) for k in obj]
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        layout = "module-prefixed" if layout == "bare" else f"{layout}, module-prefixed"
    return dict(obj), layout


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """Read tensors from any supported file. Returns (state_dict without prefixes, layout, metadata)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointFormatError(f"{path}: empty file, not a checkpoint")
    if path.suffix.lower() == ".onnx":  # torch.load's own word for it is advice to unpickle it unsafely
        raise CheckpointFormatError(f"{path} is an ONNX model, not PyTorch weights; give the .safetensors or .pth "
                                    "checkpoint it was exported from")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        state, metadata = _read_safetensors(path)
        layout = "safetensors" if metadata.get(_KEY_FORMAT) == FORMAT_TAG else "safetensors (no BANet header)"
        state, prefixed = _extract_state_dict(state, path)
        return state, layout if prefixed == "bare" else f"{layout}, {prefixed}", metadata
    state, layout = _extract_state_dict(_read_torch(path), path)
    return state, layout, {}


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with a little-endian u64 header length followed by '{'."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def infer_config(state: dict[str, torch.Tensor], source: str = "state_dict") -> BANetConfig:
    """Work out the network configuration from tensor shapes and key names (BANet or BANet+, any depth)."""
    required = ["en_layer1.0.weight", "en_layer2.0.weight", "BAM_1.BA.fuse_conv.weight"]
    absent = [k for k in required if k not in state]
    if absent:
        raise CheckpointMismatchError(
            f"{source}: not a BANet state_dict: lacks {absent}; it has keys like {_short_list(list(state))}",
            missing=absent)
    dim_1 = int(state["en_layer1.0.weight"].shape[0])
    dim_2 = int(state["en_layer2.0.weight"].shape[0])
    bam_ids = {int(m.group(1)) for k in state if (m := re.match(r"BAM_(\d+)\.", k))}
    fuse_out = int(state["BAM_1.BA.fuse_conv.weight"].shape[0])
    if fuse_out not in (dim_2, dim_2 // 2):
        raise CheckpointMismatchError(
            f"{source}: BAM_1.BA.fuse_conv has {fuse_out} output channels; a BANet with inner width {dim_2} "
            f"needs {dim_2 // 2} (BANet) or {dim_2} (BANet+)",
            shape_mismatches={"BAM_1.BA.fuse_conv.weight": (tuple(state["BAM_1.BA.fuse_conv.weight"].shape),)})
    return BANetConfig(num_bams=max(bam_ids), dim_1=dim_1, dim_2=dim_2, ba_fuse_full=fuse_out == dim_2)


def check_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str = "state_dict") -> None:
    """Raise :class:`CheckpointMismatchError` listing every missing, unexpected and wrongly shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and state[k].shape != v.shape}
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_short_list(unexpected)}")
    if shapes:
        shown = "; ".join(f"{k}: file {a} vs network {b}" for k, (a, b) in sorted(shapes.items())[:_LIST_LIMIT])
        parts.append(f"{len(shapes)} shape mismatch(es): {shown}")
    config = getattr(model, "config", None)
    what = config.describe() if isinstance(config, BANetConfig) else type(model).__name__
    raise CheckpointMismatchError(f"{source}: does not fit {what}: " + "; ".join(parts),
                                  missing=missing, unexpected=unexpected, shape_mismatches=shapes)


def check_trained_values(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str = "state_dict") -> None:
    """Raise :class:`CheckpointFormatError` for tensors that cannot be a trained network's: integer or boolean ones
    where the network has floats (``load_state_dict`` would cast them silently: a wrong ``save_file`` call, mask
    or quantized tensors under the right names), and NaN or Inf values (a diverged or corrupt run, which would
    otherwise surface far away, e.g. as an export that "does not match PyTorch")."""
    expected = model.state_dict()
    not_float = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
                 if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if not_float:
        raise CheckpointFormatError(f"{source}: {len(not_float)} tensor(s) are not floating point, so they are not "
                                    f"trained weights (loading would cast them silently): {_short_list(not_float)}")
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointFormatError(f"{source}: {len(not_finite)} tensor(s) hold NaN or Inf values (a diverged or "
                                    f"corrupt training run): {_short_list(not_finite)}")


def load_checkpoint(path: str | os.PathLike, config: BANetConfig | None = None,
                    device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a BANet from any supported checkpoint file, in eval mode.

    Args:
        path: the checkpoint (``.pth``/``.pt``/``.safetensors``, any layout in the module docstring).
        config: force a configuration instead of using the stored or inferred one.
        device: where to put the model.
    """
    path = Path(path)
    state, layout, metadata = read_state_dict(path)
    inferred = False
    if config is None and _KEY_CONFIG in metadata:
        try:
            config = BANetConfig.from_json(metadata[_KEY_CONFIG])
        except (ValueError, TypeError) as exc:
            raise CheckpointFormatError(f"{path}: unreadable BANet configuration in header: {exc}") from exc
    if config is None:
        config = infer_config(state, str(path))
        inferred = True
    model = BANet(config)
    check_state_dict(state, model, str(path))
    check_trained_values(state, model, str(path))
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    log.info("loaded %s from %s (layout: %s; configuration %s)", config.describe(), path, layout,
             "inferred from tensor shapes" if inferred else "stored in the file")
    return LoadedCheckpoint(model=model, config=config, layout=layout, path=path, sha256=file_sha256(path),
                            config_inferred=inferred, metadata=metadata)


def weights_name_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is no name for weights we write (they are safetensors), or None. ``--export
    banet/weights/banet_default.onnx --force`` wrote safetensors bytes over the shipped ONNX, which every runtime
    then refused as a corrupt model."""
    suffix = Path(path).suffix
    if suffix.lower() == ".safetensors":
        return None
    kind = f"a {suffix} name" if suffix else "a name without an extension"
    return (f"{path}: weights are written as safetensors, so the name must end in .safetensors ({kind} would pass "
            "for another kind of file)")


def save_checkpoint(model: BANet, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                    overwrite: bool = False) -> Path:
    """Write our own format: safetensors weights with the configuration (and ``metadata``) in the header, to a
    ``.safetensors`` name (:func:`weights_name_problem`)."""
    from safetensors.torch import save

    from banet.outputs import write_atomic

    if (problem := weights_name_problem(path)) is not None:
        raise ValueError(problem)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    header = {str(k): str(v) for k, v in (metadata or {}).items()}
    header.update({_KEY_FORMAT: FORMAT_TAG, _KEY_CONFIG: model.config.to_json()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all (synced, renamed; a full disk or Ctrl-C leaves the old file and no temporary one).
    write_atomic(path, _canonical_header(save(tensors, metadata=header)))
    return path


def _canonical_header(data: bytes) -> bytes:
    """A safetensors file's bytes with its header's keys sorted, so equal weights give equal files (and sha256).

    safetensors serialises its metadata map in hash order, which changes from one save to the next. The header
    is length-prefixed JSON that may end in spaces; reordering keeps its length, so only those bytes change.
    """
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + length])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(canonical) > length:  # never expected; keep the library's own header rather than corrupt the file
        return data
    return data[:8] + canonical + b" " * (length - len(canonical)) + data[8 + length:]


def describe_metadata(metadata: dict[str, str]) -> str:
    """Compact JSON of a checkpoint header, for logs and reports."""
    return json.dumps(metadata, sort_keys=True)
