"""Grow a trained BANet wider without changing what it computes (Net2WiderNet, Chen et al. 2016).

A fine-tune of the shipped stack-4 32/64 network saturates (README, #18): more capacity is the next step, and
on a CPU there is no time to train a wider network from scratch. Widening the BAM features from ``dim_2`` to a
larger width by *copying* channels keeps the network's function exactly:

- a layer that produces a widened tensor gives each new channel the weights (and bias) of the old channel it
  copies, so the new channel carries the same activation (every operation between layers -- LeakyReLU, ReLU,
  sigmoid gating, strip pooling, means, residual sums -- acts channel by channel);
- a layer that consumes a widened tensor splits each old channel's input weight among that channel's copies, in
  random proportions that sum to one, so its output is unchanged; the uneven split breaks the copies' symmetry
  so training can make them differ.

Each width (``dim_2`` and ``dim_2 / 2``, and BA's fuse width) has one channel map shared by every tensor of that
width, which keeps producers and consumers consistent through the residual connections. ``dim_1`` (the
full-resolution encoder/decoder) is left as it is.

    python -m training.grow --width 96 --output training/runs/wide96/start.safetensors
    python -m training.train --run training/runs/wide96 --widths 32,96 \\
        --init-from training/runs/wide96/start.safetensors ...
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from banet.cli_types import number, path_arg
from banet.model import BANet, BlurAwareModule

#: How unevenly a consumer's weight is split among an old channel's copies (0: evenly, symmetric copies).
SPLIT_JITTER = 0.2


class ChannelMap:
    """Which old channel each new channel copies, and how consumers split an old channel among its copies."""

    def __init__(self, old: int, new: int, rng: np.random.Generator) -> None:
        if new < old:
            raise ValueError(f"can only widen: {old} -> {new} channels")
        extra = rng.choice(old, size=new - old, replace=new - old > old)
        self.source = torch.as_tensor(np.concatenate([np.arange(old), extra]), dtype=torch.long)
        self.old = old
        self.rng = rng

    def split(self, rows: int) -> torch.Tensor:
        """(rows, new) proportions: for each row, the copies of an old channel get shares that sum to one."""
        new = len(self.source)
        shares = 1.0 + SPLIT_JITTER * self.rng.uniform(-1.0, 1.0, size=(rows, new))
        shares = torch.as_tensor(shares, dtype=torch.float32)
        totals = torch.zeros(rows, self.old).index_add_(1, self.source, shares)
        return shares / totals[:, self.source]


def _widen_out(weight: torch.Tensor, bias: torch.Tensor | None, out_map: ChannelMap | None,
               dim: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    if out_map is None:
        return weight, bias
    weight = weight.index_select(dim, out_map.source)
    return weight, None if bias is None else bias.index_select(0, out_map.source)


def _widen_in(weight: torch.Tensor, in_maps: list[ChannelMap], dim: int = 1) -> torch.Tensor:
    """Split each input block's channels among their copies (the blocks of a concatenated input, in order)."""
    rows = weight.shape[1 - dim]
    blocks, start = [], 0
    for block in in_maps:
        width = block.old
        part = weight.narrow(dim, start, width).index_select(dim, block.source)
        share = block.split(rows)  # (rows, new)
        if dim == 0:  # transposed convolution: weight is (in, out, kh, kw)
            share = share.t()
        blocks.append(part * share.reshape(*share.shape, *[1] * (weight.dim() - 2)))
        start += width
    if start != weight.shape[dim]:
        raise ValueError(f"input blocks cover {start} of {weight.shape[dim]} channels")
    return torch.cat(blocks, dim=dim)


def _set_conv(module: nn.Conv2d | nn.ConvTranspose2d, out_map: ChannelMap | None,
              in_maps: list[ChannelMap]) -> None:
    """Rewrite a (transposed) convolution's parameters and shape for widened outputs and inputs (none: kept)."""
    transposed = isinstance(module, nn.ConvTranspose2d)
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    with torch.no_grad():
        weight, bias = _widen_out(module.weight.data, None if module.bias is None else module.bias.data,
                                  out_map, dim=out_dim)
        if in_maps:
            weight = _widen_in(weight, in_maps, dim=in_dim)
    module.weight = nn.Parameter(weight.contiguous())
    if bias is not None:
        module.bias = nn.Parameter(bias.contiguous())
    module.in_channels = weight.shape[in_dim]
    module.out_channels = weight.shape[out_dim]


def _widen_bam(bam: BlurAwareModule, trunk: ChannelMap, half: ChannelMap, fused: ChannelMap) -> None:
    ba = bam.BA
    _set_conv(bam.input_conv, trunk, [trunk])
    for conv in (ba.conv_1_h, ba.conv_1_w, ba.conv_3, ba.conv_5, ba.conv_7):
        _set_conv(conv, half, [trunk])
    _set_conv(ba.fuse_conv, fused, [half] * 4)
    _set_conv(ba.conv_final, trunk, [fused])
    _set_conv(ba.mask_conv_1, trunk, [trunk])
    _set_conv(ba.mask_conv_2, trunk, [trunk])
    for suffix in ("", "_2"):
        for dilation in (1, 3, 5):
            _set_conv(getattr(bam, f"content_conv_d{dilation}{suffix}"), half, [trunk])
    _set_conv(bam.fuse_conv_1, trunk, [half] * 3)
    _set_conv(bam.final_conv, trunk, [half] * 3 + [trunk])


def widen(model: BANet, dim_2: int, seed: int = 0) -> BANet:
    """A copy of ``model`` whose BAMs are ``dim_2`` wide, computing the same function (up to float rounding)."""
    old = model.config
    if dim_2 % 2:
        raise ValueError(f"dim_2 must be even, got {dim_2}")
    rng = np.random.default_rng(seed)
    trunk = ChannelMap(old.dim_2, dim_2, rng)
    half = ChannelMap(old.half_width, dim_2 // 2, rng)
    fused = trunk if old.ba_fuse_full else half
    grown = BANet(replace(old, dim_2=dim_2))
    source = copy.deepcopy(model).cpu()  # the caller's model is left as it is
    _set_conv(source.en_layer2[0], trunk, [])
    for k in range(1, old.num_bams + 1):
        _widen_bam(getattr(source, f"BAM_{k}"), trunk, half, fused)
    _set_conv(source.de_layer1[0], None, [trunk])
    grown.load_state_dict(source.state_dict(), strict=True)
    return grown.eval()


#: The widest BAM grown: 4x BANet+'s 192 (parameters grow with its square; 100,000 asked for 360 GB and was a
#: traceback from PyTorch's allocator).
MAX_WIDTH = 768


def bam_width(text: str) -> int:
    """argparse ``type`` of ``--width``: an even number of channels, 2 to :data:`MAX_WIDTH` (BANet halves it
    inside each BAM)."""
    value = number(int, 2, MAX_WIDTH)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even (each BAM works at half of it too), got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 written, 1 weights that cannot be grown or a failed write (one ``error:``
    line), 2 a bad option."""
    from banet.checkpoint import save_checkpoint, weights_name_problem
    from banet.defaults import DEFAULT_WEIGHTS
    from banet.outputs import write_error
    from training.train import TrainError, carried_metadata, load_option_checkpoint

    parser = argparse.ArgumentParser(prog="python -m training.grow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=DEFAULT_WEIGHTS, help="the trained network to grow")
    parser.add_argument("--width", type=bam_width, required=True, help="new dim_2 (BAM width, even), e.g. 96")
    parser.add_argument("--output", type=path_arg, required=True, help="safetensors file to write (not overwritten)")
    parser.add_argument("--seed", type=number(int, 0), default=0, help="seed of the channel copies and weight splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.output.exists():
        parser.error(f"{args.output} exists; choose another --output (it is not overwritten)")
    if (problem := weights_name_problem(args.output)) is not None:
        parser.error(f"--output {problem}")
    try:  # a missing file, an ONNX model, not a checkpoint, not a BANet: the checkpoint reader's own one line
        loaded = load_option_checkpoint("--weights", args.weights)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.width < loaded.config.dim_2:
        print(f"error: --width {args.width} is narrower than {args.weights}'s {loaded.config.describe()} (dim_2 "
              f"{loaded.config.dim_2}); grow only widens: give a --width of at least {loaded.config.dim_2}",
              file=sys.stderr)
        return 1
    grown = widen(loaded.model, args.width, args.seed)
    probe = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        drift = (grown(probe) - loaded.model(probe)).abs().max().item()
    if drift > 1e-4:  # a copy rule out of step with banet.model: refuse to write a different network
        print(f"error: the widened network differs from the original by {drift:.2e} (training/grow.py's copy rules "
              f"do not match banet.model); {args.output} not written", file=sys.stderr)
        return 1
    metadata = carried_metadata(loaded.metadata)
    metadata["banet.grown_from"] = f"{args.weights} ({loaded.config.describe()}, sha256 {loaded.sha256[:12]})"
    try:  # whole or not at all (save_checkpoint writes through banet.outputs.write_atomic)
        path = save_checkpoint(grown, args.output, metadata=metadata)
    except OSError as exc:  # a full disk, a folder that cannot be made or written
        print(f"error: {write_error(exc, args.output)}; nothing written", file=sys.stderr)
        return 1
    print(f"wrote {path}: {grown.config.describe()}, max |output difference| from the original {drift:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
