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

try:  # a thin install (no torch, onnx...): one line naming what to install, not a traceback
    import numpy as np
    import torch

    from banet.cli_types import path_arg
    from banet.outputs import shown_path
    from banet.processing import postprocess, preprocess
    from export.parity import Restorer, evaluate_pairs, psnr, ssim  # noqa: F401  (re-exported)
    from runtime.images import write_image
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "python -m training.evaluate")
    raise

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


#: Crops of training photos per family in ``--train-gap`` (as many as the held-out set has).
TRAIN_GAP_CROPS = 26


def training_photo_packages() -> dict[str, str]:
    """Listed training photo path (as in :data:`training.photos.TRAINING_PHOTOS`) -> its Debian package."""
    from training.photos import TRAINING_PHOTOS

    return {path: package for package, paths in TRAINING_PHOTOS.items() for path in paths}


def _package_and_name(found: Path, listing: dict[str, str]) -> tuple[str, str]:
    """(package, short unique name) of a found training photo: its listed path below the package's common folder,
    without suffix (``Kite_contents_images_2560x1600`` for a KDE wallpaper whose files are all 2560x1600.jpg)."""
    import os

    for path, package in listing.items():
        rel = path.lstrip("/")
        if str(found).endswith(rel) or str(found).endswith(str(Path(rel).with_suffix(".jpg"))):
            siblings = [p for p, k in listing.items() if k == package]
            root = os.path.commonpath([str(Path(p).parent) for p in siblings])
            return package, str(Path(os.path.relpath(path, root)).with_suffix("")).replace(os.sep, "_")
    return "?", found.stem


def training_eval_crops(count: int = TRAIN_GAP_CROPS, size: int | None = None,
                        packages: Sequence[str] | None = None,
                        roots: Sequence[str | Path] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` (name, photo, (y, x)) sharp crop positions from training photos, spread evenly over the list.

    One centred ``size`` px crop per photo (the held-out crop size by default), taken from the photo as training
    decodes it (:func:`training.photos.load_photo`, longer side 1024). ``packages`` restricts the photos (e.g.
    the 68 photos a model was trained on before issue #33); ``roots`` are the folders searched (default
:func:`training.photos.photo_roots`: ``$BANET_PHOTO_ROOT`` and ``/``). Raises with the install hint when there are none.
    """
    from calibration.photos import EVAL_CROP
    from training.photos import INSTALL_HINT, load_photo, training_photo_files

    size = size or EVAL_CROP
    listing = training_photo_packages()
    files = [f for f in training_photo_files(roots) if packages is None or _package_and_name(f, listing)[0] in packages]
    if not files:
        raise FileNotFoundError(f"no training photos{' of ' + ', '.join(packages) if packages else ''} found; "
                                f"{INSTALL_HINT}")
    picks = sorted({int(round(i)) for i in np.linspace(0, len(files) - 1, min(count, len(files)))})
    crops = []
    for i in picks:
        photo = load_photo(files[i]).astype(np.float32) / np.float32(255.0)
        h, w = photo.shape[:2]
        side = min(size, h, w)
        y, x = (h - side) // 2, (w - side) // 2
        package, name = _package_and_name(files[i], listing)
        crops.append((f"train_{package}_{name}", photo, (y, x, side)))
    return crops


def training_family_pairs(family: str, crops: Sequence[tuple[str, np.ndarray, tuple[int, int, int]]]) -> list:
    """(name, blurred, sharp) pairs of training-photo crops degraded exactly as the held-out ``family`` is (same
    configuration, seed and per-name random stream, real photo content as the blur's margin)."""
    from calibration.photos import EVAL_FAMILIES, blurred_crop, item_rng

    if family not in EVAL_FAMILIES:
        raise ValueError(f"unknown blur family {family!r}; choose one of {sorted(EVAL_FAMILIES)}")
    config, seed = EVAL_FAMILIES[family]
    return [(name, blurred_crop(photo, y, x, side, item_rng(seed, name), config),
             np.ascontiguousarray(photo[y:y + side, x:x + side])) for name, photo, (y, x, side) in crops]


def evaluate_train_gap(restore: Restorer, count: int = TRAIN_GAP_CROPS, packages: Sequence[str] | None = None,
                       limit: int | None = None, roots: Sequence[str | Path] | None = None) -> dict:
    """Per held-out family: the mean and worst gain on held-out crops and on as many training-photo crops, and
    the gap (training minus held-out mean gain; large = the model fits its training photos better than new
    ones). The two splits differ in content too, so a gap is an upper bound on over-fitting, not a measure of
    it alone; comparing two models' gaps on the same crops is what tells whether more photos helped."""
    from tqdm import tqdm

    from calibration.photos import EVAL_FAMILIES, heldout_family_pairs

    crops = training_eval_crops(count, packages=packages, roots=roots)
    out: dict = {"train_crops": len(crops), "train_packages": sorted(packages) if packages else "all",
                 "families": {}}
    for name in tqdm(EVAL_FAMILIES, desc="families", unit="family"):
        held = family_summary(evaluate_pairs(restore, heldout_family_pairs(name)[:limit], with_ssim=False))
        train = family_summary(evaluate_pairs(restore, training_family_pairs(name, crops), with_ssim=False))
        out["families"][name] = {
            "heldout": {k: held[k] for k in ("psnr_gain", "worst_gain", "worst_image", "images")},
            "train": {k: train[k] for k in ("psnr_gain", "worst_gain", "worst_image", "images")},
            "gap_db": train["psnr_gain"] - held["psnr_gain"]}
    return out


def train_gap_lines(gap: dict) -> list[str]:
    """The ``--train-gap`` table as text lines."""
    lines = [f"gain on training-photo crops ({gap['train_crops']} photos, packages: {gap['train_packages']}) "
             "next to held-out",
             f"{'family':13s} {'held-out mean':>13s} {'worst':>7s} {'train mean':>10s} {'worst':>7s} {'gap':>6s}"]
    for name, row in gap["families"].items():
        h, t = row["heldout"], row["train"]
        lines.append(f"{name:13s} {h['psnr_gain']:+13.2f} {h['worst_gain']:+7.2f} {t['psnr_gain']:+10.2f} "
                     f"{t['worst_gain']:+7.2f} {row['gap_db']:+6.2f}")
    return lines


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


#: This command's own folder: each run refreshes the results there.
DEFAULT_OUTPUT = Path("out/eval")


def output_names(train_gap: bool) -> list[str]:
    """The files :func:`main` writes into ``--output``: ``train_gap.json`` with ``--train-gap``, else the pictures
    and ``metrics.json``."""
    if train_gap:
        return ["train_gap.json"]
    from calibration.photos import EVAL_FAMILIES

    return ["metrics.json", *(f"side_by_side_{name}.png" for name in EVAL_FAMILIES), "sharp_worst.png",
            "clock_motion.png"]


def check_outputs(folder: Path, names: Sequence[str], force: bool, weights: Path | None) -> None:
    """Refuse (``ValueError``, one line) an ``--output`` that is a file, or that already holds one of ``names``
    without ``force``, or whose folder cannot be written; never the ``--weights`` file itself, even with
    ``force``. Run before the evaluation, so a refusal costs nothing."""
    from banet.outputs import check_output

    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder} is a file; give a folder for the metrics and pictures")
    for name in names:
        check_output(folder / name, force=force, error=ValueError, suffix=Path(name).suffix,
                     inputs={"the checkpoint (--weights)": weights}, option="--output")


def _written(path: Path, data: bytes) -> bool:
    """Write ``path`` whole or not at all; a failure (a full disk) is one ``error:`` line and False."""
    from banet.outputs import write_atomic, write_error

    try:
        write_atomic(path, data)
    except OSError as exc:
        print(f"error: {write_error(exc, path, len(data))}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint in any supported layout (default: the embedded default model)")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="folder for metrics and pictures (default out/eval, which each run refreshes; in a folder "
                             "you name, earlier results only with --force)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out images")
    parser.add_argument("--train-gap", action="store_true",
                        help="instead: each family's gain on crops of training photos next to held-out, and the "
                             "gap (over-fitting measured, not guessed); writes OUTPUT/train_gap.json")
    parser.add_argument("--train-crops", type=int, default=None,
                        help=f"training photos (one centred crop each, spread over the list) for --train-gap "
                             f"(default {TRAIN_GAP_CROPS})")
    parser.add_argument("--train-packages", default=None,
                        help="comma-separated packages to take --train-gap photos from (default: all), e.g. the "
                             "photos a model was or was not trained on")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the metrics.json (or train_gap.json) and pictures already in the --output "
                             "folder you named (out/eval's are always refreshed)")
    args = parser.parse_args(argv)
    if not args.train_gap and (args.train_crops is not None or args.train_packages is not None):
        parser.error("--train-crops and --train-packages choose the training photos of --train-gap; add --train-gap")
    args.train_crops = TRAIN_GAP_CROPS if args.train_crops is None else args.train_crops
    if args.train_crops < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--train-crops and --limit must be positive")
    packages = [p.strip() for p in args.train_packages.split(",") if p.strip()] if args.train_packages else None
    if packages is not None:
        from training.photos import TRAINING_PHOTOS

        unknown = sorted(set(packages) - set(TRAINING_PHOTOS))
        if unknown or not packages:
            print(f"error: unknown training package(s) {', '.join(unknown) or repr(args.train_packages)}; choose "
                  f"from {', '.join(TRAINING_PHOTOS)}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from banet.checkpoint import CheckpointError, load_checkpoint
    from banet.defaults import default_weights_path

    try:
        # before minutes of evaluation: an --output that is a file, or earlier results there (another model's,
        # or committed ones under training/runs/*/eval), are refused unless --force, as other commands do
        # out/eval is this command's own folder (a rerun refreshes it, as calibration.drift's out/drift); a folder
        # the user names keeps its results unless --force
        replace = args.force or args.output is None
        args.output = DEFAULT_OUTPUT if args.output is None else args.output
        loaded = load_checkpoint(args.weights or default_weights_path())  # first: a refused one makes no folder
        check_outputs(args.output, output_names(args.train_gap), replace, args.weights)
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    restore = torch_restorer(loaded.model)
    if args.train_gap:
        try:
            gap = evaluate_train_gap(restore, args.train_crops, packages, args.limit)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        gap.update(weights=shown_path(loaded.path), sha256=loaded.sha256)
        if not _written(args.output / "train_gap.json", json.dumps(gap, indent=2).encode()):
            return 1
        for line in train_gap_lines(gap):
            print(line)
        print(f"wrote {args.output / 'train_gap.json'}")
        return 0
    results = evaluate_all(restore, args.limit)
    pictures: dict[str, np.ndarray] = {}
    for name, family in results["families"].items():
        rows = family["per_image"]
        order = np.argsort([r["psnr_blurred"] - r["psnr_deblurred"] for r in rows])
        picks = [int(order[0]), int(order[len(order) // 2])]
        rows = [(family["pairs"][i][1], family["restored"][i], family["pairs"][i][2]) for i in picks]
        pictures[f"side_by_side_{name}.png"] = side_by_side(rows)
    sharp = results["sharp"]
    worst = int(np.argmin([r["psnr_identity"] for r in sharp["per_image"]]))
    pictures["sharp_worst.png"] = side_by_side([(sharp["crops"][worst][1], sharp["restored"][worst])])
    pictures["clock_motion.png"] = side_by_side([results["clock_motion"]["images"]])
    for name, picture in pictures.items():
        try:  # whole or not at all, as every image the project writes
            write_image(args.output / name, np.ascontiguousarray(picture[..., ::-1]))  # RGB -> BGR
        except OSError as exc:  # ImageWriteError: one line naming the file (a full disk...)
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report = {"weights": shown_path(loaded.path), "sha256": loaded.sha256, "config": loaded.config.to_dict(),
              "families": {k: {"summary": v["summary"], "per_image": v["per_image"]}
                           for k, v in results["families"].items()},
              "sharp": {"summary": sharp["summary"], "per_image": sharp["per_image"]},
              "clock_motion": results["clock_motion"]["summary"]}
    # the original keys, kept for tools reading the trajectory family as "the held-out set"
    report.update(summary=report["families"]["trajectory"]["summary"],
                  per_image=report["families"]["trajectory"]["per_image"])
    if not _written(args.output / "metrics.json", json.dumps(report, indent=2).encode()):  # last: the run is whole
        return 1
    for line in _report_lines(results):
        print(line)
    print(f"wrote {args.output / 'metrics.json'} and the pictures beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
