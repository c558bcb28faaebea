"""Which blocks hurt most in INT8, and which to keep in float so the drift stays within a budget.

    python -m calibration.sensitivity --flavour ort --drift-budget-db 45

Blocks come from the PyTorch module path in the ONNX node names (:func:`calibration.quantize.group_of`:
``BAM_3/BA``, ``BAM_3/BA.mask``, ``BAM_3/CPDC``, ``de_layer3``, ``global_residual``...). For each block, the model
is quantized with *only that block* in INT8 (calibrated ranges are cached, so this costs one quantization pass,
not one calibration, per block), and its output compared with FP32 ONNX Runtime on a probe set: blurred crops
of held-out photos drawn with a different seed from the calibration images, or the user's calibration folder.
Quantization noise from different blocks adds up roughly in power, so blocks are ranked by the mean squared
error each causes alone. Then, starting from everything quantized, the worst blocks are tried in float one at a
time, re-quantizing and re-measuring after each, and kept in float when that helps, until the drift (PSNR vs
FP32, dB) reaches the budget. The
report says, for every kept block, how much error it caused alone and what the drift was after keeping it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from banet.outputs import check_output, write_atomic, write_error
from calibration.data import CalibrationSource
from calibration.int8 import FLAVOURS, METHODS, QuantizeError, node_groups, quantizable_nodes, quantize_int8

log = logging.getLogger(__name__)


@dataclass
class GroupSensitivity:
    """One block: its size and the drift it causes when it alone is quantized."""

    group: str
    nodes: int
    alone_psnr_db: float
    alone_mse: float


@dataclass
class SensitivityReport:
    """The ranking, the greedy exclusion steps and the resulting float blocks."""

    flavour: str
    method: str
    budget_db: float
    probe: str
    all_quantized_psnr_db: float
    groups: list[GroupSensitivity]
    steps: list[dict] = field(default_factory=list)
    tried: list[dict] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    final_psnr_db: float = math.nan
    budget_met: bool = False
    seconds: float = 0.0

    def summary(self) -> dict:
        """The JSON-able report (also stored in the INT8 model's metadata by ``--auto-exclude``)."""
        data = asdict(self)
        data["groups"] = [asdict(g) for g in self.groups]
        return data

    def table(self) -> str:
        kept = {s["group"]: s for s in self.steps}
        rejected = {t["group"]: t for t in self.tried if not t["kept"]}
        lines = [f"INT8 sensitivity ({self.flavour}, {self.method}); probe: {self.probe}",
                 f"all blocks quantized: {self.all_quantized_psnr_db:.2f} dB vs FP32; budget {self.budget_db:g} dB",
                 f"{'block':22s} {'nodes':>5s} {'alone dB':>9s}  kept in float?"]
        if not self.groups:
            lines.append("(not ranked: every block in int8 meets the budget)")
        for g in self.groups:
            why = ""
            if g.group in kept:
                why = f"yes (step {kept[g.group]['step']}: drift -> {kept[g.group]['psnr_db']:.2f} dB)"
            elif g.group in rejected:
                why = f"no (would give {rejected[g.group]['psnr_db_if_kept_in_float']:.2f} dB: no gain)"
            lines.append(f"{g.group:22s} {g.nodes:5d} {g.alone_psnr_db:9.2f}  {why}")
        verdict = "met" if self.budget_met else "NOT met"
        lines.append(f"float blocks: {', '.join(self.excluded) or 'none'}; drift {self.final_psnr_db:.2f} dB; budget "
                     f"{verdict}; {self.seconds:.0f} s")
        return "\n".join(lines)


def probe_inputs(source: CalibrationSource, count: int = 8, size: tuple[int, int] = (128, 128),
                 seed_offset: int = 1000) -> tuple[list[np.ndarray], str]:
    """Network inputs for measuring drift: like the calibration source, another seed, smaller and fewer."""
    probe = CalibrationSource(source.folder, count, size, 1, source.seed + seed_offset, source.mode)
    return probe.batches(), probe.describe()


def _mse_db(reference: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    from banet.processing import network_output_to_unit
    from export.parity import psnr_from_mse

    mse = float(np.mean([np.mean((network_output_to_unit(r.astype(np.float64))
                                  - network_output_to_unit(o.astype(np.float64))) ** 2)
                         for r, o in zip(reference, outputs)]))
    return mse, psnr_from_mse(mse)


def search(fp32_onnx: str | Path, source: CalibrationSource, flavour: str = "ort", method: str = "minmax",
           budget_db: float = 45.0, probe: tuple[list[np.ndarray], str] | None = None, percentile: float = 99.999,
           max_excluded: int | None = None, min_gain_db: float = 0.1, threads: int | None = 1,
           rank_when_met: bool = True) -> SensitivityReport:
    """Rank blocks by the drift each causes alone, then keep the worst in float until ``budget_db`` holds.

    A block is only kept in float when doing so improves the drift by more than ``min_gain_db`` (its error can
    be masked by quantization of the tensors around it); blocks tried and not kept are in ``report.tried``.
    ``rank_when_met=False`` (``calibration.quantize --auto-exclude``, which wants the file, not the ranking): where
    every block in int8 already meets the budget, no block is ranked (one quantization instead of one per block).
    """
    import onnx
    from tqdm import tqdm

    from export.runtime_forwards import onnxruntime_forward

    started = time.perf_counter()
    fp32_onnx = Path(fp32_onnx)
    batches, probe_name = probe or probe_inputs(source)
    reference_forward = onnxruntime_forward(fp32_onnx, threads)
    reference = [reference_forward(x) for x in batches]
    spec = FLAVOURS[flavour]
    groups = {name: nodes for name, nodes in node_groups(quantizable_nodes(
        onnx.load(str(fp32_onnx), load_external_data=False), spec)).items()
        if name not in spec.float_groups}  # blocks the flavour always keeps in float are no candidates

    with tempfile.TemporaryDirectory(prefix="banet-sensitivity-") as tmp:
        def drift(excluded: list[str], tag: str) -> tuple[float, float]:
            path = Path(tmp) / f"{tag}.onnx"
            quantize_int8(fp32_onnx, path, source, flavour, method, excluded, percentile, force=True,
                          verify_shapes=(), threads=threads, log_level=logging.DEBUG, heldout=False)  # a throwaway
            forward = onnxruntime_forward(path, threads)
            return _mse_db(reference, [forward(x) for x in batches])

        _, all_db = drift([], "all")
        ranking = []
        if all_db >= budget_db and not rank_when_met:
            log.info("every block in int8 gives %.2f dB, within the %g dB budget: no block ranked", all_db, budget_db)
            groups = {}
        for i, name in enumerate(tqdm(groups, desc=f"blocks ({flavour})", leave=False)):
            mse, db = drift([g for g in groups if g != name], f"only{i}")
            ranking.append(GroupSensitivity(name, len(groups[name]), db, mse))
        ranking.sort(key=lambda g: -g.alone_mse)
        report = SensitivityReport(flavour, method, budget_db, probe_name, all_db, ranking)
        current, excluded = all_db, []
        limit = len(ranking) - 1 if max_excluded is None else min(max_excluded, len(ranking) - 1)
        for g in ranking:
            if current >= budget_db or len(excluded) >= limit:
                break
            _, trial = drift([*excluded, g.group], f"try-{len(report.tried)}")
            helped = trial > current + min_gain_db
            report.tried.append({"group": g.group, "alone_psnr_db": round(g.alone_psnr_db, 2),
                                 "psnr_db_if_kept_in_float": round(trial, 2), "kept": helped})
            if not helped:  # the block's error is masked by its neighbours' quantization: no reason to keep it
                log.info("%s in float would give %.2f dB (now %.2f): not worth it", g.group, trial, current)
                continue
            excluded.append(g.group)
            current = trial
            report.steps.append({"step": len(excluded), "group": g.group, "alone_psnr_db": round(g.alone_psnr_db, 2),
                                 "psnr_db": round(current, 2)})
            log.info("keeping %s in float (alone: %.2f dB): drift now %.2f dB", g.group, g.alone_psnr_db, current)
    report.excluded, report.final_psnr_db = excluded, current
    report.budget_met = current >= budget_db
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    from banet.cli_types import number, path_arg
    from calibration.cli_common import (
        DEFAULT_PERCENTILE,
        add_calibration_arguments,
        command_errors,
        decibels,
        ensure_fp32_onnx,
        error_line,
        help_text,
        parse_size,
        percentile_arg,
        percentile_conflict,
        read_files,
        source_from_args,
    )
    from runtime.images import quiet_opencv

    parser = argparse.ArgumentParser(prog="python -m calibration.sensitivity", description=help_text(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 the drift budget met, 1 an error (one line), 2 a usage "
                                            "error, 3 the budget not met with the blocks allowed in float")
    parser.add_argument("--onnx", type=path_arg, default=None,
                        help="FP32 ONNX (default engines/<weights stem>.onnx, exported if missing)")
    parser.add_argument("--weights", type=path_arg, default=None, help="checkpoint to export when the ONNX is missing")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="ort", help="Q/DQ flavour (default ort)")
    parser.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default minmax)")
    parser.add_argument("--percentile", type=percentile_arg, default=DEFAULT_PERCENTILE,
                        help=f"percentile for --method percentile, in (0, 100] (default {DEFAULT_PERCENTILE})")
    parser.add_argument("--drift-budget-db", type=decibels, default=45.0,
                        help="keep blocks in float until the output PSNR vs FP32 is at least this (default 45 dB)")
    parser.add_argument("--max-excluded", type=number(int, 0), default=None,
                        help="keep at most this many blocks in float (0: none, only rank them)")
    parser.add_argument("--probe-count", type=number(int, 1, 1000), default=8,
                        help="probe images, 1 to 1000 (default 8)")
    parser.add_argument("--probe-size", type=parse_size, default=(128, 128), metavar="HxW",
                        help="probe image size (default 128x128)")
    parser.add_argument("--json", type=path_arg, default=None,
                        help="also write the report as JSON here (an existing file only with --force)")
    parser.add_argument("--force", action="store_true", help="replace the --json file if it already exists")
    add_calibration_arguments(parser)
    args = parser.parse_args(argv)
    if conflict := percentile_conflict(args):
        parser.error(conflict)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_opencv()
    try:
        if args.json:  # refused before the search (minutes), not after it
            check_output(args.json, force=args.force, error=QuantizeError, suffix=".json", option="--json",
                         inputs=read_files(args.onnx, args.weights))
        source = source_from_args(args)
        probe = probe_inputs(source, args.probe_count, args.probe_size)
        fp32 = ensure_fp32_onnx(args.onnx, args.weights)
        report = search(fp32, source, args.flavour, args.method, args.drift_budget_db, probe, args.percentile,
                        args.max_excluded)
    except command_errors() as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    print(report.table())
    if args.json:
        try:  # whole or not at all: a full disk leaves the previous file as it was
            write_atomic(args.json, json.dumps(report.summary(), indent=2).encode())
        except OSError as exc:
            print(f"error: {write_error(exc, args.json)}", file=sys.stderr)
            return 1
    return 0 if report.budget_met else 3


if __name__ == "__main__":
    raise SystemExit(main())
