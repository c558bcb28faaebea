"""Triton Python-backend model: the BANet network on ONNX Runtime (``model.onnx`` in this version folder).

The flavour for a Triton server that has only the Python backend (such as the one PyTriton bundles); NVIDIA's
server containers can also use the ``onnxruntime_onnx`` flavour. Triton's dynamic batcher hands over several
requests at once: requests of the same image size run as one batch. The session options come from the copy of
``banet/onnxruntime_options.py`` next to this file, the same code the runtime opens its sessions with.
Parameters (config.pbtxt): ``intra_op_threads`` (0: ONNX Runtime's default).
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the banet/ copy next to this file, never another installed banet

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

import banet.onnxruntime_options  # noqa: E402
from banet.onnxruntime_options import session_options  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0") or 0)
        if Path(banet.onnxruntime_options.__file__).resolve().parent != HERE / "banet":
            raise RuntimeError(f"imported {banet.onnxruntime_options.__file__}, not the copy in {HERE / 'banet'}")
        options = session_options(ort, threads)
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
