"""Measure training speed: batches/s of the data pipeline alone and steps/s of whole training steps, per worker count.

    python -m training.step_rate --workers 0 1 2                     # the default network, 4 x 192 px, CPU
    python -m training.step_rate --device cuda --batch 16 --crop 256 --workers 0 4 8

Nothing is saved: the optimizer steps a throwaway copy of the network. The first ``--skip`` steps of each
measurement (worker start-up, allocator warm-up) are not timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from dataclasses import replace

import torch

from banet.cli_types import number
from banet.config import BANetConfig
from banet.defaults import DEFAULT_CONFIG
from banet.errors import first_line
from banet.model import BANet
from training.photos import crop_size
from training.train import (
    PRECISIONS,
    BatchSource,
    PhotoBatches,
    TrainConfig,
    autocast_dtype,
    batch_stream,
    check_memory,
    grad_scaler,
    parse_widths,
    pick_device,
    to_network,
    train_step,
    worker_count,
)

log = logging.getLogger(__name__)


def data_rate(source: BatchSource, workers: int, steps: int, skip: int) -> float:
    """Batches per second the pipeline delivers with ``workers`` processes (no training)."""
    stream = batch_stream(source, 0, workers)
    try:
        for _ in range(skip):
            next(stream)
        start = time.perf_counter()
        for _ in range(steps):
            next(stream)
        return steps / (time.perf_counter() - start)
    finally:
        stream.close()


def step_rate(source: BatchSource, config: TrainConfig, device: torch.device, workers: int, steps: int,
              skip: int, precision: str = "auto") -> float:
    """Whole training steps per second with ``workers`` processes: the batch and :func:`training.train.train_step`
    (forward, loss, backward, gradient clipping, Adam), the step ``train.py`` runs and its budget probe times."""
    model = BANet(config.model).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    amp = autocast_dtype(device, precision)
    scaler = grad_scaler(device, amp)
    stream = batch_stream(source, 0, workers)
    try:
        start = 0.0
        for i in itertools.count():
            if i == skip:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if i == skip + steps:
                break
            blurred, sharp = next(stream)
            train_step(model, optimizer, to_network(blurred, device), to_network(sharp, device), config, amp,
                       scaler)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps / (time.perf_counter() - start)
    finally:
        stream.close()


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 measured, 1 no photos or a device it cannot use, 2 a bad option."""
    from calibration.blur import RECIPES

    parser = argparse.ArgumentParser(prog="python -m training.step_rate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=worker_count, nargs="+", default=[0, 1, 2],
                        help="worker counts to measure (each at most the CPUs this process may use)")
    parser.add_argument("--batch", type=number(int, 1), default=4)
    parser.add_argument("--crop", type=crop_size, default=192)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="do-no-harm",
                        help="blur distribution (calibration/blur.py)")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--widths", default=f"{DEFAULT_CONFIG.dim_1},{DEFAULT_CONFIG.dim_2}",
                        help="dim_1,dim_2 widths of the network measured")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--skip", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--no-train", action="store_true", help="measure the data pipeline only")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.skip < 0:
        parser.error("--steps must be >= 1, --skip >= 0")
    try:
        dim_1, dim_2 = parse_widths(args.widths)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from training.photos import load_training_photos

    config = replace(TrainConfig(), model=BANetConfig(DEFAULT_CONFIG.num_bams, dim_1, dim_2), batch=args.batch,
                     crop=args.crop, recipe=args.recipe, augment=args.augment)
    try:
        device = pick_device(args.device)  # a wrong device, fp16 on a CPU: one line before the photos are decoded
        autocast_dtype(device, args.precision)
        check_memory(config)  # a --batch x --crop that cannot fit: one line, not a swapping machine
        source = PhotoBatches(load_training_photos(), config)
    except (ValueError, OSError) as exc:  # TrainError, no photos, a photo that cannot be decoded
        parser.exit(1, f"error: {first_line(exc)}\n")
    for workers in args.workers:
        result = {"device": str(device), "workers": workers, "batch": args.batch, "crop": args.crop,
                  "threads": torch.get_num_threads(),
                  "data_batches_per_s": round(data_rate(source, workers, args.steps, args.skip), 3)}
        if not args.no_train:
            result["train_steps_per_s"] = round(step_rate(source, config, device, workers, args.steps, args.skip,
                                                          args.precision), 3)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
