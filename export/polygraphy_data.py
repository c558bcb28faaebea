"""A Polygraphy data loader: real photographs through the runtime's own pre-processing, as NCHW float32 batches,
so ``polygraphy run`` compares models on the inputs a deployment feeds them (not random noise).

    polygraphy run engines/banet_default.onnx --onnxrt \\
        --data-loader-script export/polygraphy_data.py:load_data --save-outputs golden.json
    polygraphy run engines/banet_default_fp16.onnx --onnxrt \\
        --data-loader-script export/polygraphy_data.py:load_data --load-outputs golden.json \\
        --check-error-stat max --atol 0.05 --rtol 0
    polygraphy run engines/banet_default.onnx --trt --onnxrt \\
        --data-loader-script export/polygraphy_data.py:load_data   # on the GPU machine: TensorRT vs ONNX Runtime

Settings come from the environment (all optional):

* ``BANET_PG_SHAPES``: batches as ``NxHxW``, comma separated (default ``1x256x256,2x128x192``); keep them
  inside the engine's profile, height and width multiples of the network's size multiple (2);
* ``BANET_PG_IMAGES``: a folder of the user's images (default: the held-out photos bundled with scikit-image);
* ``BANET_PG_INPUT``: the input tensor's name (default ``input``, what ``export/to_onnx.py`` writes).

From an installed package, the script's path is ``python -c "import export.polygraphy_data as m; print(m.__file__)"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from banet.conventions import BANET
from banet.processing import preprocess
from banet.shapes import ShapeError, parse_nhw

DEFAULT_SHAPES = "1x256x256,2x128x192"


def shapes_from_env() -> list[tuple[int, int, int]]:
    """``BANET_PG_SHAPES`` parsed and checked against the size multiple."""
    text = os.environ.get("BANET_PG_SHAPES") or DEFAULT_SHAPES
    shapes = [parse_nhw(part) for part in text.split(",") if part.strip()]
    multiple = BANET.size_multiple
    for n, h, w in shapes:
        if h % multiple or w % multiple:
            raise ShapeError(f"BANET_PG_SHAPES: {n}x{h}x{w} has a side that is not a multiple of {multiple} "
                             "(the network pads to it; a data loader must give what the model takes)")
    return shapes


def _user_batch(folder: Path, batch: int, height: int, width: int, start: int) -> np.ndarray:
    """``batch`` of the folder's images (cycled, sorted by name), resized to HxW, pre-processed."""
    from PIL import Image

    from runtime.images import IMAGE_SUFFIXES, read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"BANET_PG_IMAGES: no images in {folder}")
    images = []
    for i in range(batch):
        bgr = read_image(files[(start + i) % len(files)])
        rgb = bgr[..., 2::-1] if bgr.ndim == 3 else np.repeat(bgr[..., None], 3, axis=2)
        if rgb.dtype != np.uint8:
            rgb = (rgb.astype(np.float64) / np.iinfo(rgb.dtype).max * 255).round().astype(np.uint8)
        images.append(np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.BICUBIC)))
    batch_array, _ = preprocess(np.stack(images), channel_order="RGB", pad=False)
    return batch_array


def load_data() -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy's entry point: one feed dict per shape in ``BANET_PG_SHAPES``."""
    name = os.environ.get("BANET_PG_INPUT") or "input"
    folder = os.environ.get("BANET_PG_IMAGES")
    for index, (n, h, w) in enumerate(shapes_from_env()):
        if folder:
            yield {name: _user_batch(Path(folder), n, h, w, index)}
        else:
            from export.parity import photo_batch

            yield {name: photo_batch(n, h, w, seed=index)}
