"""Triton Python-backend model: raw network output + original size -> UINT8 [N, H, W, 3] BGR images.

Written into the model repository by ``export/to_triton.py`` with a copy of banet-deploy's numpy-only core
(``banet/`` next to this file): the one post-processing implementation, and nothing but numpy needed.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the banet/ copy next to this file, never another installed banet

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

import banet.processing  # noqa: E402
from banet.conventions import Conventions  # noqa: E402
from banet.processing import Padding, postprocess  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        if Path(banet.processing.__file__).resolve().parent != HERE / "banet":
            raise RuntimeError(f"imported {banet.processing.__file__}, not the copy in {HERE / 'banet'}")
        config = json.loads(args["model_config"])
        self.output_name = config["input"][0]["name"]
        stored = (HERE / "conventions.json").read_text()
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
