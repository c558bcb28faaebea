"""Triton Python-backend model: the BANet network on ONNX Runtime (``model.onnx`` in this version folder).

The flavour for a Triton server that has only the Python backend (such as the one PyTriton bundles); NVIDIA's
server containers can also use the ``onnxruntime_onnx`` flavour. Triton's dynamic batcher hands over several
requests at once: requests of the same image size run as one batch. The session options come from the copy of
``banet/onnxruntime_options.py`` next to this file, the same code the runtime opens its sessions with.

Memory: an image larger than the memory budget runs in overlapping tiles blended as the runtime's ``Deblurrer``
blends them (``tiling.py`` next to this file is a copy of the runtime's ``runtime/tiling.py``), and a batch in
chunks that fit, so one forward pass takes at most about ``memory_budget_mb`` whatever the image size (an untiled
12 MP photo needed about 14 GB). The tile plan is the ``Deblurrer``'s for the same budget.

Parameters (config.pbtxt, written by ``export/to_triton.py``): ``intra_op_threads`` (0: ONNX Runtime's default);
``memory_budget_mb`` and ``budget_pixels`` (input pixels one forward pass may take under it; 0: no budget, whole
images as sent); ``tile_overlap``, ``size_multiple``, ``min_size`` and ``max_size`` (the network's, from its
metadata); ``fixed_batch`` (the export's batch size, 0: dynamic).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the banet/ and tiling.py copies next to this file, never another installed one

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tiling  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from tiling import run_tiled, tile_plan  # noqa: E402

import banet.onnxruntime_options  # noqa: E402
from banet.onnxruntime_options import session_options  # noqa: E402

log = logging.getLogger(__name__)
#: The parameters the tile plan needs (config.pbtxt), all whole numbers.
PLAN_PARAMETERS = ("budget_pixels", "tile_overlap", "size_multiple", "min_size", "max_size", "fixed_batch")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0") or 0)
        for module, expected in ((banet.onnxruntime_options, HERE / "banet"), (tiling, HERE)):
            if Path(module.__file__).resolve().parent != expected:
                raise RuntimeError(f"imported {module.__file__}, not the copy in {expected}")
        try:
            plan = {key: int(params[key]["string_value"]) for key in PLAN_PARAMETERS}
        except (KeyError, TypeError, ValueError):
            raise RuntimeError(f"config.pbtxt needs the parameters {', '.join(PLAN_PARAMETERS)} that "
                               "export/to_triton.py writes; rewrite the repository") from None
        self.budget_pixels, self.overlap, self.multiple = plan["budget_pixels"], plan["tile_overlap"], \
            plan["size_multiple"]
        self.min_size, self.max_size, self.fixed_batch = plan["min_size"], plan["max_size"], plan["fixed_batch"]
        providers = ["CPUExecutionProvider"]
        on_gpu = args.get("model_instance_kind") == "GPU"
        if on_gpu:
            providers = [("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])})] + providers
        options = session_options(ort, threads, on_cpu=not on_gpu)
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
                out = self.deblur(joined)
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

    def deblur(self, batch: np.ndarray) -> np.ndarray:
        """Network input NCHW -> raw network output: whole, or in tiles of :meth:`tile_for` blended as the
        runtime blends them."""
        tile = self.tile_for(*batch.shape[2:])
        if tile is None:
            return self.forward(batch)
        log.info("%dx%d image(s) in tiles of %dx%d (budget %d pixels)", *batch.shape[2:], *tile, self.budget_pixels)
        return run_tiled(batch, self.forward, tile, self.overlap)

    def tile_for(self, height: int, width: int) -> tuple[int, int] | None:
        """The tile (h, w) an input of ``height`` x ``width`` runs in, None when it runs whole: ``tiling.tile_plan``,
        the function the runtime's ``Deblurrer.tile_for`` calls (same budget, overlap and network limits)."""
        if not self.budget_pixels:
            return None
        return tile_plan(height, width, self.budget_pixels, self.multiple, self.min_size,
                         (self.max_size, self.max_size), self.overlap)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One ONNX Runtime run per chunk of the batch that fits the budget (a fixed export batch runs as sent)."""
        chunk = len(batch)
        if self.budget_pixels and not self.fixed_batch:
            chunk = max(1, min(chunk, self.budget_pixels // (batch.shape[2] * batch.shape[3])))
        if chunk >= len(batch):
            return self.session.run(None, {self.input_name: batch})[0]
        return np.concatenate([self.session.run(None, {self.input_name: batch[start:start + chunk]})[0]
                               for start in range(0, len(batch), chunk)])
