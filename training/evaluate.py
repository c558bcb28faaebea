"""Evaluate deblurring quality on the held-out synthetic set: PSNR/SSIM of blurred vs restored vs sharp.

    python -m training.evaluate                       # the embedded default model
    python -m training.evaluate --weights BANet_GoPro.pth --output out/eval

Reports each held-out blur family separately (camera-shake trajectories, straight linear motion blurred in sRGB
and in linear light: mean gain, worst image, share of images made worse), sharp inputs (PSNR of the output
against the input: a sharp photo must come back unchanged) and scikit-image's real motion-blurred
``clock_motion.png`` (no reference: variance of the Laplacian before/after). Writes ``metrics.json`` and
side-by-side PNGs (blurred | deblurred | sharp). The held-out photos never appear in training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from banet.outputs import shown_path
from banet.processing import postprocess, preprocess
from export.parity import Restorer, evaluate_pairs, psnr, ssim  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

#: A sharp input must come back at least this close to itself (PSNR, dB) to count as "unchanged".
IDENTITY_FLOOR_DB = 35.0

#: Restores a list of HxWx3 RGB float32 [0, 1] images; any backend can be evaluated through this.


def torch_restorer(model: torch.nn.Module, device: str | torch.device = "cpu") -> Restorer:
    """A :data:`Restorer` running a PyTorch model one image at a time (images may differ in size)."""

    def restore(images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image in images:
            batch, padding = preprocess(image, channel_order="RGB")
            with torch.no_grad():
                raw = model(torch.from_numpy(batch).to(device)).float().cpu().numpy()
            out.append(postprocess(raw, padding, np.float32, channel_order="RGB")[0])
        return out

    return restore


def quick_evaluator(count: int) -> Callable[[torch.nn.Module], dict]:
    """For training logs, on the first ``count`` held-out crops of each family (no SSIM; 26 = all, ~20 s on two
    CPU cores at 256 px): the trajectory family's PSNR gain and worst image, the sRGB linear family's mean and
    worst gain, and the worst identity PSNR on sharp inputs. A subset is faster but can mislead: the first 8
    crops overstated the full set's gain by 0.3-0.45 dB and hold none of its hardest images."""
    from calibration.photos import heldout_crops, heldout_family_pairs, heldout_pairs

    pairs = heldout_pairs()[:count]
    linear = heldout_family_pairs("linear_srgb")[:count]
    sharp = [image for _, image in heldout_crops()[:count]]

    def run(model: torch.nn.Module) -> dict:
        device = next(model.parameters()).device
        restore = torch_restorer(model, device)
        result = evaluate_pairs(restore, pairs, with_ssim=False)
        summary = family_summary(result)
        out = {k: round(summary[k], 4) for k in ("psnr_blurred", "psnr_deblurred", "psnr_gain", "worst_gain")}
        out["worst_image"] = summary["worst_image"]
        rows = evaluate_pairs(restore, linear, with_ssim=False)["per_image"]
        gains = [r["psnr_deblurred"] - r["psnr_blurred"] for r in rows]
        out.update(linear_gain=round(float(np.mean(gains)), 4), linear_worst=round(float(min(gains)), 4))
        out["sharp_worst_psnr"] = round(min(psnr(r, s) for r, s in zip(restore(sharp), sharp)), 4)
        return out

    return run


def side_by_side(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tile rows of equally sized RGB float images into one uint8 picture with white gaps."""
    lines = []
    for row in rows:
        height = row[0].shape[0]
        spacer = np.ones((height, gap, 3), np.float32)
        parts = [p for image in row for p in (image, spacer)][:-1]
        lines.append(np.concatenate(parts, axis=1))
    width = lines[0].shape[1]
    spacer = np.ones((gap, width, 3), np.float32)
    parts = [p for line in lines for p in (line, spacer)][:-1]
    return (np.clip(np.concatenate(parts, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)


def clock_motion_demo(restore: Restorer) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's real motion-blurred photo (grey, replicated to 3 channels) and its restoration."""
    import os

    import skimage.data
    from skimage.io import imread

    grey = imread(os.path.join(skimage.data.data_dir, "clock_motion.png")).astype(np.float32) / 255.0
    image = np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey[..., :3]
    return image, restore([image])[0]


def family_summary(result: dict) -> dict:
    """Mean gain, worst image and share of images made worse, from :func:`evaluate_pairs` output."""
    gains = [r["psnr_deblurred"] - r["psnr_blurred"] for r in result["per_image"]]
    worst = int(np.argmin(gains))
    return {**result["summary"], "worst_gain": gains[worst], "worst_image": result["per_image"][worst]["name"],
            "share_worse": float(np.mean([g < 0 for g in gains]))}


def evaluate_sharp(restore: Restorer, crops: Sequence[tuple[str, np.ndarray]],
                   floor_db: float = IDENTITY_FLOOR_DB) -> dict:
    """Sharp inputs must come back unchanged: PSNR of the output against the input itself, per image."""
    restored = restore([image for _, image in crops])
    per_image = [{"name": name, "psnr_identity": psnr(out, image)} for (name, image), out in zip(crops, restored)]
    values = [r["psnr_identity"] for r in per_image]
    worst = int(np.argmin(values))
    return {"summary": {"psnr_identity": float(np.mean(values)), "worst_psnr_identity": values[worst],
                        "worst_image": per_image[worst]["name"], "floor_db": floor_db,
                        "share_below_floor": float(np.mean([v < floor_db for v in values])),
                        "images": len(values)},
            "per_image": per_image, "restored": restored}


#: Scale of the Gaussian before the Laplacian in :func:`laplacian_variance` (pixels).
SHARPNESS_SIGMA = 1.0


def laplacian_variance(image: np.ndarray, sigma: float = SHARPNESS_SIGMA) -> float:
    """No-reference sharpness: variance of the Laplacian of Gaussian (scale ``sigma`` px) of the grey image, on
    the 8-bit scale; higher = sharper. ``sigma=0`` is the plain variance of the Laplacian, which pixel noise and
    8-bit/JPEG grain dominate: a restoration that removes grain while sharpening edges scores lower on it."""
    import cv2

    grey = np.asarray(image, np.float32).mean(axis=2) * 255.0
    if sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigma)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def evaluate_all(restore: Restorer, limit: int | None = None) -> dict:
    """Every held-out family (see ``calibration.photos.EVAL_FAMILIES``), sharp identity and ``clock_motion``."""
    from tqdm import tqdm

    from calibration.photos import EVAL_FAMILIES, heldout_crops, heldout_family_pairs

    families: dict[str, dict] = {}
    for name in tqdm(EVAL_FAMILIES, desc="families", unit="family"):
        pairs = heldout_family_pairs(name)[:limit]
        result = evaluate_pairs(restore, pairs)
        families[name] = {"summary": family_summary(result), "per_image": result["per_image"],
                          "pairs": pairs, "restored": result["restored"]}
    sharp_crops = heldout_crops()[:limit]
    sharp = evaluate_sharp(restore, sharp_crops)
    sharp["crops"] = sharp_crops
    clock, clock_restored = clock_motion_demo(restore)
    clock_summary = {"sharpness_sigma_px": SHARPNESS_SIGMA,
                     "laplacian_variance_before": laplacian_variance(clock),
                     "laplacian_variance_after": laplacian_variance(clock_restored),
                     "raw_laplacian_variance_before": laplacian_variance(clock, 0.0),
                     "raw_laplacian_variance_after": laplacian_variance(clock_restored, 0.0)}
    return {"families": families, "sharp": sharp,
            "clock_motion": {"summary": clock_summary, "images": (clock, clock_restored)}}


def _report_lines(results: dict) -> list[str]:
    lines = []
    for name, family in results["families"].items():
        s = family["summary"]
        lines.append(f"{name:13s} {s['images']} images  PSNR {s['psnr_blurred']:.2f} -> {s['psnr_deblurred']:.2f} dB "
                     f"({s['psnr_gain']:+.2f} dB; worst {s['worst_gain']:+.2f} dB on {s['worst_image']}, "
                     f"{100 * s['share_worse']:.0f}% made worse)  SSIM {s['ssim_blurred']:.3f} -> "
                     f"{s['ssim_deblurred']:.3f}")
    s = results["sharp"]["summary"]
    lines.append(f"{'sharp':13s} {s['images']} images  output vs input {s['psnr_identity']:.2f} dB mean, worst "
                 f"{s['worst_psnr_identity']:.2f} dB on {s['worst_image']} ({100 * s['share_below_floor']:.0f}% "
                 f"below {s['floor_db']:.0f} dB)")
    c = results["clock_motion"]["summary"]
    lines.append(f"{'clock_motion':13s} sharpness (variance of the Laplacian of Gaussian, sigma "
                 f"{c['sharpness_sigma_px']:g} px) {c['laplacian_variance_before']:.3f} -> "
                 f"{c['laplacian_variance_after']:.3f} (plain Laplacian, grain included: "
                 f"{c['raw_laplacian_variance_before']:.1f} -> {c['raw_laplacian_variance_after']:.1f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint in any supported layout (default: the embedded default model)")
    parser.add_argument("--output", type=Path, default=Path("out/eval"), help="folder for metrics and pictures")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from banet.checkpoint import CheckpointError, load_checkpoint
    from banet.defaults import default_weights_path

    try:
        loaded = load_checkpoint(args.weights or default_weights_path())
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    restore = torch_restorer(loaded.model)
    results = evaluate_all(restore, args.limit)
    args.output.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for name, family in results["families"].items():
        rows = family["per_image"]
        order = np.argsort([r["psnr_blurred"] - r["psnr_deblurred"] for r in rows])
        picks = [int(order[0]), int(order[len(order) // 2])]
        pictures = [(family["pairs"][i][1], family["restored"][i], family["pairs"][i][2]) for i in picks]
        Image.fromarray(side_by_side(pictures)).save(args.output / f"side_by_side_{name}.png")
    sharp = results["sharp"]
    worst = int(np.argmin([r["psnr_identity"] for r in sharp["per_image"]]))
    Image.fromarray(side_by_side([(sharp["crops"][worst][1], sharp["restored"][worst])])).save(
        args.output / "sharp_worst.png")
    Image.fromarray(side_by_side([results["clock_motion"]["images"]])).save(args.output / "clock_motion.png")
    report = {"weights": shown_path(loaded.path), "sha256": loaded.sha256, "config": loaded.config.to_dict(),
              "families": {k: {"summary": v["summary"], "per_image": v["per_image"]}
                           for k, v in results["families"].items()},
              "sharp": {"summary": sharp["summary"], "per_image": sharp["per_image"]},
              "clock_motion": results["clock_motion"]["summary"]}
    # the original keys, kept for tools reading the trajectory family as "the held-out set"
    report.update(summary=report["families"]["trajectory"]["summary"],
                  per_image=report["families"]["trajectory"]["per_image"])
    (args.output / "metrics.json").write_text(json.dumps(report, indent=2))
    for line in _report_lines(results):
        print(line)
    print(f"wrote {args.output / 'metrics.json'} and the pictures beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
