"""Command-line pieces the precision tools share (``calibration.quantize``, ``calibration.sensitivity``,
``calibration.drift``): calibration arguments, finding or exporting the FP32 ONNX, one error line per failure."""

from __future__ import annotations

import argparse
import errno
import logging
import math
import re
from pathlib import Path

from banet.cli_types import number, path_arg
from banet.outputs import NAME_MAX, check_input
from banet.shapes import parse_hw
from calibration.data import CalibrationDataError, CalibrationSource, list_images
from calibration.int8 import QuantizeError
from export.artifact_chain import export_command, export_hint, exported_onnx, fresh_fp32_name

log = logging.getLogger(__name__)



#: Sphinx cross-references in a docstring (``:mod:`calibration.int8```, ``:func:`~a.b```): their target's name.
_ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|exc):`~?([^`]+)`")


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: Sphinx roles and double backticks (for the API documentation)
    turned into plain text, so a newcomer reads ``calibration.int8`` and `--exclude`, not ``:mod:`calibration.int8```.
    """
    text = _ROLE.sub(lambda match: match[1], doc or "")
    return text.replace("``", "`")


#: The percentile --method percentile calibrates to unless --percentile says otherwise.
DEFAULT_PERCENTILE = 99.999


def percentile_arg(text: str) -> float:
    """argparse type for ``--percentile``: a number in (0, 100], refused before any work is done."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentile: it must be in (0, 100], e.g. 99.999")
    return value


def percentile_conflict(args: argparse.Namespace) -> str | None:
    """Why ``--percentile`` would be ignored (another ``--method``), or None."""
    if args.percentile != DEFAULT_PERCENTILE and args.method != "percentile":
        return f"--percentile is for --method percentile; with --method {args.method} it would be ignored"
    return None


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` or one number (a square): :func:`banet.shapes.parse_hw`."""
    return parse_hw(text, square_from_one=True)


def decibels(text: str) -> float:
    """argparse type: a drift budget in dB (PSNR vs FP32), a positive finite number (``nan`` would pass no test)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of dB (PSNR vs FP32, e.g. 45), got {text}")
    return value


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration-data options shared by the quantize, sensitivity and drift commands."""
    group = parser.add_argument_group("calibration data")
    group.add_argument("--calib-dir", type=path_arg, default=None,
                       help="folder of your own (blurred) images; default: the built-in held-out set")
    group.add_argument("--calib-count", type=int, default=32, help="number of calibration images (default 32)")
    group.add_argument("--calib-size", type=parse_size, default=(256, 256), metavar="HxW",
                       help="calibration input size: your engine profile's opt size (default 256x256)")
    group.add_argument("--calib-batch", type=int, default=1, help="images per calibration batch (default 1)")
    group.add_argument("--calib-mode", choices=("crop", "resize"), default="crop",
                       help="fit folder images by a seeded crop at native resolution (default) or a resize")
    group.add_argument("--seed", type=number(int, 0), default=0, help="sampling/crop seed, >= 0 (default 0)")


#: The calibration options, by their ``args`` names (:func:`add_calibration_arguments`).
CALIBRATION_OPTIONS = ("calib_dir", "calib_count", "calib_size", "calib_batch", "calib_mode", "seed")


def calibration_options_given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The calibration options given other values than their defaults, as typed (``--calib-dir``...)."""
    return ["--" + name.replace("_", "-") for name in CALIBRATION_OPTIONS
            if getattr(args, name) != parser.get_default(name)]


def source_from_args(args: argparse.Namespace) -> CalibrationSource:
    """The calibration source the options describe, refused (CalibrationDataError) before any work: a
    ``--calib-dir`` that is missing, not a folder or holds no images, a size, count or batch it cannot take. A
    folder holding fewer images than ``--calib-count`` gives a source of all of them, said once: the log, the INT8
    file's record and the ranges cache then count what was used (they said the 32 requested of a 4-image folder)."""
    count = args.calib_count
    if args.calib_dir is not None:
        found = len(list_images(args.calib_dir))
        if found < count:
            log.warning("%s holds %d images, fewer than the %d requested: using all of them", args.calib_dir,
                        found, count)
            count = found
    return CalibrationSource(args.calib_dir, count, tuple(args.calib_size), args.calib_batch, args.seed,
                             args.calib_mode)


def read_files(onnx: Path | None, weights: Path | None, onnx_what: str = "the FP32 ONNX") -> dict[str, Path]:
    """The files a precision command reads, named for :func:`banet.outputs.check_output`'s ``inputs``: the given
    ``--onnx`` and ``--weights``, else the defaults it would read (``engines/<weights stem>.onnx``, exported when
    missing, and the embedded checkpoint). A file it writes must be none of them, even with ``--force``."""
    from banet.artifacts import onnx_path
    from banet.defaults import DEFAULT_WEIGHTS

    checkpoint = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    return {f"{onnx_what} (--onnx)" if onnx is not None else f"{onnx_what} (the default)":
                Path(onnx) if onnx is not None else onnx_path(checkpoint.stem),
            "the checkpoint (--weights)" if weights is not None else "the embedded default checkpoint": checkpoint}


def ensure_fp32_onnx(path: Path | None, weights: Path | None) -> Path:
    """The FP32 ONNX to quantize or measure against, checked: readable, a BANet FP32 export, of ``weights``.

    A given ``path`` must be there: a mistyped name is refused with the command that makes it, never exported
    to. Only the default, ``engines/<weights stem>.onnx``, is exported first when missing. Given ``weights``
    must exist, and the ONNX must have been exported from them (as must a derived one from the default weights).
    """
    from banet.defaults import default_weights_path

    given_weights = weights is not None
    if given_weights:
        check_input(weights, error=QuantizeError, what="checkpoint file")
    weights = Path(weights) if weights else default_weights_path()
    if path is None:  # the default: made when missing, refused when exported from other weights
        return exported_onnx(weights)
    path = Path(path)
    metadata = read_fp32_onnx(path, weights if given_weights else None)
    from banet.metadata import stale_source

    # one given together with its weights must come from those weights
    stale = stale_source(metadata, path, weights) if given_weights else None
    if stale:  # the ONNX is the user's: name its checkpoint first, re-exporting over it is the second choice
        raise QuantizeError(f"{stale}; pass --weights with the checkpoint it was exported from, or re-export it: "
                            f"{export_command(weights, 'fp32', path)} --force")
    return path


def read_fp32_onnx(path: Path, weights: Path | None = None):
    """The metadata of a given FP32 ONNX; QuantizeError (one line, how to make it) for a missing, unreadable,
    foreign or non-FP32 file."""
    from banet.metadata import ArtifactError, read_onnx_metadata

    if path.is_dir():  # not a file to export to either
        raise QuantizeError(f"{path} is a folder, not an FP32 ONNX file; name the file, or leave out --onnx to use "
                            "(and make) engines/<weights stem>.onnx")
    make = export_command(weights, "fp32", path)
    try:
        metadata = read_onnx_metadata(path)
    except FileNotFoundError as exc:
        raise QuantizeError(f"{exc}; export it with {make}, or leave out --onnx to use (and make) "
                            "engines/<weights stem>.onnx") from None
    except ArtifactError as exc:
        raise QuantizeError(str(exc)) from None
    if metadata.precision != "fp32":
        fresh = fresh_fp32_name(path)
        command = export_hint(weights, "fp32", fresh, metadata.source_name, metadata.source_sha256)
        export = f"export one with {command} and " if fresh is not None else ""
        raise QuantizeError(f"{path} is a {metadata.precision} model; quantize (and measure against) an FP32 export: "
                            f"{export}pass it as --onnx, or leave out --onnx to use (and make) "
                            "engines/<weights stem>.onnx")
    return metadata


def parse_summary(parse: dict) -> str:
    """The TensorRT parser check as the end of the command's summary line ("" for flavours it does not apply to)."""
    if not parse:
        return ""
    if "skipped" in parse:
        return f"; TensorRT parser check skipped ({parse['skipped']})"
    return f"; {parse['parser']} parses it ({parse['layers']} layers)"


def command_errors() -> tuple[type[Exception], ...]:
    """What the calibration commands refuse in one line (``error: ...``, exit 1) instead of a traceback: their
    own errors, those of the checkpoint and export behind an FP32 ONNX they make first, and a path the system
    refuses (``OSError``: a name longer than the file system allows, a folder that cannot be read)."""
    from banet.checkpoint import CheckpointError
    from export.onnx_export import ExportError

    return QuantizeError, CalibrationDataError, CheckpointError, ExportError, OSError


def error_line(exc: Exception) -> str:
    """``error: <first line>``: detail after it (an export's parity table) has already been logged. An ``OSError``
    from the system names its path, what the system said and, for a name too long, the remedy."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        remedy = (f" (a file or folder name is at most {NAME_MAX} bytes: give a shorter one)"
                  if exc.errno == errno.ENAMETOOLONG else "")
        return f"error: {where}{exc.strerror}{remedy}"
    return f"error: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}"


