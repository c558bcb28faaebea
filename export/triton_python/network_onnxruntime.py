"""Triton Python-backend model: the BANet network on ONNX Runtime (``model.onnx`` in this version folder).

The flavour for a Triton server that has only the Python backend (such as the one PyTriton bundles); NVIDIA's
server containers can also use the ``onnxruntime_onnx`` flavour. Triton's dynamic batcher hands over several
requests at once: requests of the same image size run as one batch. The session is opened as
``runtime.backends.onnxruntime_backend.open_session`` opens it (quiet log, CPU arena off).
Parameters (config.pbtxt): ``intra_op_threads`` (0: ONNX Runtime's default).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            providers = [("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])})] + providers
        self.session = ort.InferenceSession(str(HERE / "model.onnx"), options, providers=providers)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        responses = [None] * len(requests)
        groups: dict = {}
        for index, batch in enumerate(inputs):
            groups.setdefault(batch.shape[1:], []).append(index)
        for indices in groups.values():
            try:
                joined = np.concatenate([inputs[i] for i in indices]) if len(indices) > 1 else inputs[indices[0]]
                out = self.session.run(None, {self.input_name: joined})[0]
            except Exception as exc:  # noqa: BLE001 - one failed group must not take the others down
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            start = 0
            for i in indices:
                n = len(inputs[i])
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out[start:start + n])])
                start += n
        return responses
