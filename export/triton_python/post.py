"""Triton Python-backend model: raw network output + original size -> UINT8 [N, H, W, 3] BGR images.

Written into the model repository by ``export/to_triton.py``; uses banet-deploy's one post-processing
implementation (banet-deploy must be installed in Triton's Python environment).
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from banet.conventions import Conventions
from banet.processing import Padding, postprocess


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output_name = config["input"][0]["name"]
        stored = (Path(__file__).parent / "conventions.json").read_text()
        self.conventions = Conventions.from_metadata(json.loads(stored))

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, self.output_name).as_numpy()
            height, width = (int(v) for v in pb_utils.get_input_tensor_by_name(request, "original_size").as_numpy()[0])
            padding = Padding(height, width, raw.shape[2] - height, raw.shape[3] - width)
            try:
                images = postprocess(raw, padding, np.uint8, self.conventions)
            except (ValueError, RuntimeError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("deblurred", images)]))
        return responses
