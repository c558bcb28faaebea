"""Triton Python-backend model: UINT8 [N, H, W, 3] BGR images -> padded float32 NCHW network input.

Written into the model repository by ``export/to_triton.py`` with a copy of banet-deploy's numpy-only core
(``banet/`` next to this file): the one pre-processing implementation, and nothing but numpy needed.
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
from banet.processing import preprocess  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        if Path(banet.processing.__file__).resolve().parent != HERE / "banet":
            raise RuntimeError(f"imported {banet.processing.__file__}, not the copy in {HERE / 'banet'}")
        config = json.loads(args["model_config"])
        self.input_name = config["output"][0]["name"]
        stored = (HERE / "conventions.json").read_text()
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
