"""Evaluate deblurring quality on the held-out synthetic set: PSNR/SSIM of blurred vs restored vs sharp.

    python -m training.evaluate                       # the embedded default model
    python -m training.evaluate --weights BANet_GoPro.pth --output out/eval

Writes ``metrics.json``, a side-by-side PNG (blurred | deblurred | sharp) and the result on scikit-image's
``clock_motion.png``, a real motion-blurred photograph. The held-out photos never appear in training.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from banet.outputs import shown_path
from banet.processing import postprocess, preprocess

log = logging.getLogger(__name__)

#: Restores a list of HxWx3 RGB float32 [0, 1] images; any backend can be evaluated through this.
Restorer = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(b, a, data_range=1.0, channel_axis=2))


def evaluate_pairs(restore: Restorer, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                   with_ssim: bool = True) -> dict:
    """Mean PSNR (and SSIM) of the blurred inputs and of the restored outputs against the sharp images."""
    names = [p[0] for p in pairs]
    blurred = [p[1] for p in pairs]
    sharp = [p[2] for p in pairs]
    restored = restore(blurred)
    per_image = []
    for name, b, r, s in zip(names, blurred, restored, sharp):
        row = {"name": name, "psnr_blurred": psnr(b, s), "psnr_deblurred": psnr(r, s)}
        if with_ssim:
            row.update(ssim_blurred=ssim(b, s), ssim_deblurred=ssim(r, s))
        per_image.append(row)
    summary = {k: float(np.mean([row[k] for row in per_image])) for k in per_image[0] if k != "name"}
    summary["psnr_gain"] = summary["psnr_deblurred"] - summary["psnr_blurred"]
    if with_ssim:
        summary["ssim_gain"] = summary["ssim_deblurred"] - summary["ssim_blurred"]
    summary["images"] = len(per_image)
    return {"summary": summary, "per_image": per_image, "restored": restored}


def quick_evaluator(count: int) -> Callable[[torch.nn.Module], dict]:
    """For training logs, on the first ``count`` held-out crops (fast, no SSIM): the trajectory family's PSNR
    gain, the sRGB linear family's mean and worst gain, and the worst identity PSNR on sharp inputs."""
    from training.photos import heldout_crops, heldout_family_pairs, heldout_pairs

    pairs = heldout_pairs()[:count]
    linear = heldout_family_pairs("linear_srgb")[:count]
    sharp = [image for _, image in heldout_crops()[:count]]

    def run(model: torch.nn.Module) -> dict:
        device = next(model.parameters()).device
        restore = torch_restorer(model, device)
        summary = evaluate_pairs(restore, pairs, with_ssim=False)["summary"]
        out = {k: round(summary[k], 4) for k in ("psnr_blurred", "psnr_deblurred", "psnr_gain")}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint in any supported layout (default: the embedded default model)")
    parser.add_argument("--output", type=Path, default=Path("out/eval"), help="folder for metrics and pictures")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from banet.checkpoint import load_checkpoint
    from banet.defaults import default_weights_path
    from training.photos import heldout_pairs

    loaded = load_checkpoint(args.weights or default_weights_path())
    restore = torch_restorer(loaded.model)
    pairs = heldout_pairs()[: args.limit]
    result = evaluate_pairs(restore, pairs)
    args.output.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    order = np.argsort([-r["psnr_deblurred"] + r["psnr_blurred"] for r in result["per_image"]])
    picks = [int(order[0]), int(order[len(order) // 2])]
    rows = [(pairs[i][1], result["restored"][i], pairs[i][2]) for i in picks]
    Image.fromarray(side_by_side(rows)).save(args.output / "side_by_side.png")
    clock, clock_restored = clock_motion_demo(restore)
    Image.fromarray(side_by_side([(clock, clock_restored)])).save(args.output / "clock_motion.png")
    report = {"weights": shown_path(loaded.path), "sha256": loaded.sha256, "config": loaded.config.to_dict(),
              "summary": result["summary"], "per_image": result["per_image"]}
    (args.output / "metrics.json").write_text(json.dumps(report, indent=2))
    s = result["summary"]
    print(f"{s['images']} held-out images  PSNR blurred {s['psnr_blurred']:.2f} dB -> deblurred "
          f"{s['psnr_deblurred']:.2f} dB ({s['psnr_gain']:+.2f} dB)  SSIM {s['ssim_blurred']:.4f} -> "
          f"{s['ssim_deblurred']:.4f} ({s['ssim_gain']:+.4f})")
    print(f"wrote {args.output / 'metrics.json'}, side_by_side.png, clock_motion.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
