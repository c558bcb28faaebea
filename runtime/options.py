"""The command-line options that make a :class:`~runtime.Deblurrer`: model, backend, precision, threads, tiles and
the pixel limit, in one place for every command that deblurs (``python -m runtime``, ``python -m runtime.rosbag``,
``serving.batch``), so that each takes the same options and makes the same outputs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from banet.cli_types import path_arg, threads
from runtime.images import DEFAULT_MAX_PIXELS
from runtime.loading import BACKENDS
from runtime.selection import PRECISIONS


def add_model_options(parser: argparse.ArgumentParser,
                      threads_help: str = "CPU threads for ONNX Runtime / OpenVINO (default: all cores)",
                      threads_type: Callable[[str], int] | None = None) -> None:
    """The options that make the :class:`~runtime.Deblurrer` (:func:`deblurrer_options`): model, backend,
    precision, threads, tiles, the pixel limit. ``threads_type`` parses --threads (default: 0, all cores, up to the
    CPUs this process may use; refused on the command line, exit 2, outside that)."""
    parser.add_argument("--model", type=path_arg, default=None,
                        help="checkpoint (.pth/.safetensors), ONNX file or TensorRT engine (default: embedded model)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default=None,
                        help="force a backend; auto: the fastest installed for the file (OpenVINO, else ONNX Runtime, "
                             "for an .onnx and the default model) (default: from the model file's extension)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="int8: run the model's INT8 file on ONNX Runtime or OpenVINO (shipped for the default "
                             "model; refused if its recorded held-out cost exceeds 0.3 dB); bf16: an FP32 .onnx on "
                             "OpenVINO in bfloat16, or a checkpoint on PyTorch under bfloat16 autocast (CPUs with "
                             "bfloat16 units); default: the file as it is")
    parser.add_argument("--threads", type=threads_type or threads(0), default=None, help=threads_help)
    parser.add_argument("--tile", type=int, default=None, help="process large images in tiles of this size")
    parser.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels")
    parser.add_argument("--max-megapixels", type=megapixels, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="refuse images larger than this from their header, before decoding (decompression "
                             "bombs); default %(default)g")


def deblurrer_options(args: argparse.Namespace) -> dict:
    """The :class:`~runtime.Deblurrer` keyword arguments the options of :func:`add_model_options` ask for."""
    options = {} if args.threads is None else {"threads": args.threads}
    return dict(model=args.model, backend=args.backend, tile=args.tile, tile_overlap=args.tile_overlap,
                precision=args.precision, max_pixels=round(args.max_megapixels * 1e6), **options)


def megapixels(text: str) -> float:
    """argparse type: a finite number of megapixels, at least one pixel (1e-6)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    if round(value * 1e6) < 1:  # what the limit is in pixels: 0 would refuse every image
        raise argparse.ArgumentTypeError(f"must be at least one pixel (1e-6 megapixels), got {text}")
    return value
