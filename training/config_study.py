"""Choose the default network by measuring quality per FLOP: train candidates with one short recipe, compare.

Every candidate trains from scratch with the same data stream, seed, schedule and step budget, then the PSNR
gain over the blurred input is measured on the held-out set and set against the network's FLOPs at 256x256 and
its measured seconds per training step. Runs are resumable (one run directory per candidate), so the study can
be stopped and continued.

    python -m training.config_study --steps 600           # writes docs/config_study.{json,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from banet.cli_types import number, path_arg, threads
from banet.config import BANetConfig
from banet.defaults import DEFAULT_CONFIG
from banet.errors import first_line
from banet.model import BANet, count_parameters
from banet.outputs import check_output, write_error, write_together
from calibration.photos import Pair, heldout_pairs
from training.train import BatchSource, TrainConfig, TrainError, load_state, train

log = logging.getLogger(__name__)

STUDY_RUNS = Path("training") / "runs" / "study"  # under the current project
#: Candidates: narrower and wider than the default, fewer and more BAMs (the paper compares 4, 8, 10, 12).
CANDIDATES: dict[str, BANetConfig] = {
    "stack-2 32/64": BANetConfig(2, 32, 64),
    "stack-4 16/32": BANetConfig(4, 16, 32),
    "stack-4 32/64 (default)": DEFAULT_CONFIG,
    "stack-8 32/64": BANetConfig(8, 32, 64),
    "stack-4 48/96": BANetConfig(4, 48, 96),
}


def gflops_256(config: BANetConfig) -> float:
    """Forward GFLOP for one 256x256 image (PyTorch's FlopCounterMode, as in the benchmarks)."""
    from benchmarks.cost import flops

    return flops(config, 256, 256) / 1e9


def run_name(label: str) -> str:
    return label.split(" (")[0].replace(" ", "_").replace("/", "-")


def study_candidate(label: str, recipe: TrainConfig, runs: Path, eval_pairs: Sequence[Pair],
                    batch_source: BatchSource | None = None, progress: bool = True) -> dict:
    """Train one candidate with ``recipe`` (resuming if interrupted) and measure it on ``eval_pairs``."""
    from training.evaluate import evaluate_pairs, torch_restorer

    run_dir = runs / run_name(label)
    state_path = run_dir / "last.pt"
    start_step = 0
    if state_path.exists():
        # load_state: a damaged last.pt is one TrainError line, as training it would be (torch.load: a traceback)
        state, stored, _ = load_state(state_path)
        start_step = int(state["step"])
        if stored.steps != recipe.steps:  # resumed, its decay would change mid-run: not "N steps from scratch"
            raise TrainError(f"{run_dir} holds a study of {stored.steps} steps, not {recipe.steps}: its learning "
                             "rate decays on that schedule; give another --runs folder for this study")
    started = time.monotonic()
    history = train(recipe, run_dir, batch_source=batch_source, progress=progress, precision="auto")
    seconds = time.monotonic() - started
    model = BANet(recipe.model)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True)["model_state"])
    model.eval()
    summary = evaluate_pairs(torch_restorer(model), eval_pairs, with_ssim=True)["summary"]
    result = {
        "label": label, "config": recipe.model.to_dict(), "parameters": count_parameters(model),
        "gflops_256": round(gflops_256(recipe.model), 4), "steps": recipe.steps,
        "psnr_gain_db": round(summary["psnr_gain"], 3), "ssim_gain": round(summary["ssim_gain"], 4),
        "final_loss": history[-1]["loss"] if history else None,
        # only a run trained start-to-end in this call has an honest time per step (a resumed one's seconds
        # cover only the steps after its last save)
        "seconds_per_step": None if start_step else round(seconds / recipe.steps, 3),
    }
    result["gain_db_per_gflop"] = round(result["psnr_gain_db"] / result["gflops_256"], 4)
    return result


def output_paths(stem: Path) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` (a stem given as either file stands for both). ``with_suffix`` dropped a
    dotted stem's last part: ``study-1.5`` wrote ``study-1.json``, where another study's results may be."""
    if stem.suffix.lower() in (".json", ".md"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def to_markdown(results: Sequence[dict], steps: int, eval_images: int) -> str:
    lines = [f"Each candidate trained from scratch for {steps} steps with the same recipe and data; PSNR/SSIM gain "
             f"over the blurred input on {eval_images} held-out images. Seconds per step were measured on this "
             "machine while other work shared the CPU: compare them within one study only.", "",
             "| network | parameters | GFLOP @256² | PSNR gain (dB) | SSIM gain | dB per GFLOP | s/step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['gflops_256']:.2f} | {r['psnr_gain_db']:+.2f} | "
                     f"{r['ssim_gain']:+.3f} | {r['gain_db_per_gflop']:.3f} | {r['seconds_per_step'] or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.config_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=number(int, 1), default=600,
                        help="training steps per candidate (same for all)")
    parser.add_argument("--eval-images", type=number(int, 1), default=26,
                        help="held-out images for the final measurement")
    parser.add_argument("--only", nargs="*", default=None, help="labels (or run names) of the candidates to run")
    parser.add_argument("--runs", type=path_arg, default=STUDY_RUNS, help="directory of the candidates' runs")
    parser.add_argument("--output", type=path_arg, default=Path("docs") / "config_study",
                        help="output stem: writes <stem>.json and <stem>.md")
    parser.add_argument("--threads", type=threads(1), default=None, help="CPU threads for PyTorch")
    parser.add_argument("--force", action="store_true",
                        help="replace <stem>.json and <stem>.md already there (without it they are refused before "
                             "any training: docs/config_study.* are the committed study)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = {k: v for k, v in CANDIDATES.items()
              if args.only is None or k in args.only or run_name(k) in args.only}
    if not chosen:
        parser.error(f"--only matched no candidate; choose from {[run_name(k) for k in CANDIDATES]}")
    json_path, md_path = output_paths(args.output)
    try:  # no training photos, a damaged or foreign run, a diverged loss, a disk that refuses: one line, as train's
        for path in (json_path, md_path):  # before hours of training, not after them (committed results)
            check_output(path, force=args.force, error=TrainError, suffix=path.suffix, option="--output")
        pairs = heldout_pairs()[:args.eval_images]
        if len(pairs) < args.eval_images:  # the report would name the images asked for, not those evaluated
            log.warning("--eval-images %d: only %d held-out images exist; evaluating all of them", args.eval_images,
                        len(pairs))
            args.eval_images = len(pairs)
        results = [study_candidate(label, TrainConfig(model=config, steps=args.steps, eval_every=args.steps),
                                   args.runs, pairs) for label, config in chosen.items()]
        markdown = to_markdown(results, args.steps, args.eval_images)
        summary = {"steps": args.steps, "eval_images": args.eval_images, "results": results}
        try:  # both whole or neither (a full disk or Ctrl-C leaves the files already there as they were)
            write_together({json_path: (json.dumps(summary, indent=2) + "\n").encode(), md_path: markdown.encode()})
        except OSError as exc:
            raise TrainError(f"{write_error(exc, Path(exc.filename or json_path))}; nothing written") from exc
    except (TrainError, FloatingPointError, OSError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # TrainingInterrupted says which step the candidate's last.pt holds
        print(str(exc) or "interrupted (Ctrl-C): each candidate's run resumes from its last save", file=sys.stderr)
        return getattr(exc, "exit_status", 130)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
