"""Triton Python-backend model: UINT8 [N, H, W, 3] BGR images -> padded float32 NCHW network input.

Written into the model repository by ``export/to_triton.py``; uses banet-deploy's one pre-processing
implementation (banet-deploy must be installed in Triton's Python environment).
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from banet.conventions import Conventions
from banet.processing import preprocess


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["output"][0]["name"]
        stored = (Path(__file__).parent / "conventions.json").read_text()
        self.conventions = Conventions.from_metadata(json.loads(stored))

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            try:
                batch, padding = preprocess(images, self.conventions)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            size = np.tile(np.array([[padding.height, padding.width]], np.int32), (len(batch), 1))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.input_name, batch),
                                                         pb_utils.Tensor("original_size", size)]))
        return responses
