"""Blend two trained BANets of the same shape in weight space (WiSE-FT, Wortsman et al., CVPR 2022).

A fine-tune that gains on what it was tuned for often loses a little elsewhere (issue 33's ``photos386`` run:
camera shake's worst crop better, the sharp identity and linear light's worst crop worse). Averaging the
fine-tuned weights with the weights it started from, ``(1 - alpha) * base + alpha * tuned``, is a cheap way to
keep most of the gain and little of the loss: both networks sit in one basin of the loss, so points between them
are networks too. ``alpha`` 0 is ``base``, 1 is ``tuned``; only parameters and running statistics are blended
(integer buffers must match). Score each blend with ``python -m training.evaluate --weights OUT``.

    python -m training.train --run training/runs/area386 --export /tmp/area386.safetensors
    python -m training.interpolate --tuned /tmp/area386.safetensors --alpha 0.5 --output /tmp/blend50.safetensors
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from banet.cli_types import path_arg
from banet.model import BANet


def interpolate(base: BANet, tuned: BANet, alpha: float) -> BANet:
    """A new network ``(1 - alpha) * base + alpha * tuned``, parameter by parameter; neither input changes.

    Raises ValueError for networks of different configurations, ``alpha`` outside [0, 1], or integer buffers
    (such as batch-norm counters) that differ, which cannot be blended.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if base.config != tuned.config:
        raise ValueError(f"cannot blend {base.config.describe()} with {tuned.config.describe()}: "
                         "the networks must have the same shape")
    a, b = base.state_dict(), tuned.state_dict()
    blended = {}
    for name, value in a.items():
        other = b[name]
        if value.is_floating_point():
            blended[name] = torch.lerp(value.float(), other.float(), alpha).to(value.dtype)
        elif torch.equal(value, other):
            blended[name] = value.clone()
        else:
            raise ValueError(f"integer buffer {name} differs between the networks; cannot blend it")
    out = BANet(base.config)
    out.load_state_dict(blended)
    return out.eval()


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 written, 1 weights that cannot be read or blended or a failed write (one
    ``error:`` line), 2 a bad option."""
    from banet.checkpoint import save_checkpoint, weights_name_problem
    from banet.defaults import DEFAULT_WEIGHTS
    from banet.errors import first_line
    from banet.outputs import write_error
    from training.train import TrainError, carried_metadata, load_option_checkpoint

    parser = argparse.ArgumentParser(prog="python -m training.interpolate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=path_arg, default=DEFAULT_WEIGHTS,
                        help="the weights the fine-tune started from (default: the shipped model)")
    parser.add_argument("--tuned", type=path_arg, required=True, help="the fine-tuned weights (safetensors)")
    parser.add_argument("--alpha", type=float, required=True,
                        help="share of the fine-tuned weights, 0 (base) to 1 (tuned)")
    parser.add_argument("--output", type=path_arg, required=True, help="safetensors file to write (not overwritten)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.output.exists():
        parser.error(f"{args.output} exists; choose another --output (it is not overwritten)")
    if (problem := weights_name_problem(args.output)) is not None:
        parser.error(f"--output {problem}")
    if not 0.0 <= args.alpha <= 1.0:  # an option: before the weights are read
        parser.error(f"--alpha must be between 0 and 1, not {args.alpha}")
    try:  # the checkpoint reader's own one line, naming the option
        base, tuned = (load_option_checkpoint(f"--{option}", getattr(args, option)) for option in ("base", "tuned"))
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        blended = interpolate(base.model, tuned.model, args.alpha)
    except ValueError as exc:  # networks of two shapes, integer buffers that differ
        print(f"error: --base {args.base} and --tuned {args.tuned}: {first_line(exc)}", file=sys.stderr)
        return 1
    metadata = carried_metadata(tuned.metadata)
    metadata["banet.interpolated"] = (f"{1 - args.alpha:g} x {args.base} (sha256 {base.sha256[:12]}) + "
                                      f"{args.alpha:g} x {args.tuned} (sha256 {tuned.sha256[:12]})")
    try:  # whole or not at all (save_checkpoint writes through banet.outputs.write_atomic)
        path = save_checkpoint(blended, args.output, metadata=metadata)
    except OSError as exc:  # a full disk, a folder that cannot be made or written
        print(f"error: {write_error(exc, args.output)}; nothing written", file=sys.stderr)
        return 1
    print(f"wrote {path}: {args.alpha:g} of {args.tuned.name} blended into {args.base.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
