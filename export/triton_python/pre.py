"""Triton Python-backend model: UINT8 [N, H, W, 3] BGR images -> padded float32 NCHW network input.

Written into the model repository by ``export/to_triton.py`` with a copy of banet-deploy's numpy-only core
(``banet/`` next to this file): the one pre-processing implementation, and nothing but numpy needed.
Parameters (config.pbtxt, written with the repository): ``min_side`` and ``max_pixels``; an image outside them
is refused with one line before the float32 network input (four times its size) is allocated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the banet/ copy next to this file, never another installed banet

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

import banet.processing  # noqa: E402
from banet.conventions import Conventions  # noqa: E402
from banet.processing import preprocess  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        if Path(banet.processing.__file__).resolve().parent != HERE / "banet":
            raise RuntimeError(f"imported {banet.processing.__file__}, not the copy in {HERE / 'banet'}")
        config = json.loads(args["model_config"])
        self.input_name = config["output"][0]["name"]
        # Triton's "invalid argument" code where this Python backend has one (HTTP 400 rather than 500).
        self.bad_input = ((pb_utils.TritonError.INVALID_ARG,) if hasattr(pb_utils.TritonError, "INVALID_ARG")
                          else ())
        params = config.get("parameters", {})
        try:
            self.min_side = int(params["min_side"]["string_value"])
            self.max_pixels = int(params["max_pixels"]["string_value"])
        except (KeyError, TypeError, ValueError):
            raise RuntimeError("config.pbtxt needs the min_side and max_pixels parameters that "
                               "export/to_triton.py writes") from None
        stored = (HERE / "conventions.json").read_text()
        self.conventions = Conventions.from_metadata(json.loads(stored))

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            problem = self.refusal(images)
            if problem:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, *self.bad_input)))
                continue
            try:
                batch, padding = preprocess(images, self.conventions)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            size = np.tile(np.array([[padding.height, padding.width]], np.int32), (len(batch), 1))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.input_name, batch),
                                                         pb_utils.Tensor("original_size", size)]))
        return responses

    def refusal(self, images: np.ndarray) -> str | None:
        """Why ``images`` cannot be deblurred here (one line), or None."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            return f"expected UINT8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}"
        height, width = images.shape[1:3]
        if min(height, width) < self.min_side:
            return (f"image of {height}x{width} pixels is too small to deblur (at least "
                    f"{self.min_side}x{self.min_side})")
        if height * width > self.max_pixels:
            return f"image of {height}x{width} pixels is over the server's limit of {self.max_pixels} pixels"
        return None
