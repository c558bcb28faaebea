"""INT8 for OpenVINO made by NNCF, OpenVINO's own post-training quantizer (the ``ov`` flavour of
:mod:`calibration.int8`).

Why a quantizer of its own for one backend: OpenVINO runs a Q/DQ file fast only where its low-precision
transformations recognise the pattern around every convolution. On the ``ort`` file (ONNX Runtime's placement:
one Q/DQ pair per tensor, shared by every reader) the convolutions whose input is also read by float operations
(the BA block's pooling and gating) stay in f32 (``benchmarks/results/profile_openvino_*``: 28% of the layers'
time). NNCF places Q/DQ where OpenVINO's CPU plugin wants them, so every convolution runs in int8; ONNX Runtime
runs the same file several times slower (it is not that backend's file).

Ranges are NNCF's defaults for its performance preset (per-tensor symmetric activations, mean of each
calibration image's min and max; per-channel symmetric weights) with its fast bias correction. The mean of
per-image extremes clips the brightest and darkest pixels of the network input, so the global residual add
(output = input + residual) must read the float input: :data:`calibration.int8.FLAVOURS` keeps that block in
float for this flavour, whatever ``--exclude`` says.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def constants_as_initializers(model) -> int:
    """Turn ``Constant`` nodes holding a tensor into graph initializers, in place; returns how many.

    The same graph (a constant is a constant), in the form NNCF's graph builder reads: it looks operands such as
    a Gather's indices up among the initializers and fails on the TorchScript exporter's ``Constant`` nodes.
    """
    import onnx

    kept, moved = [], 0
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return moved


def quantize_with_nncf(model, batches: Sequence[np.ndarray], input_name: str, ignored: Sequence[str]):
    """The Q/DQ ``onnx.ModelProto`` NNCF makes of ``model`` (FP32, modified: its constants become initializers),
    calibrated on ``batches`` (NCHW float32, the network's input convention) in the given order, the nodes named
    in ``ignored`` left in float.

    Raises ModuleNotFoundError where nncf is not installed (the caller turns it into one line).
    """
    import nncf
    from nncf.common.logging.logger import set_log_level

    set_log_level(logging.WARNING)  # its INFO lines repeat what the caller logs
    constants_as_initializers(model)
    dataset = nncf.Dataset(list(batches), lambda batch: {input_name: batch})
    scope = nncf.IgnoredScope(names=list(ignored), validate=False)
    return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(batches),
                         fast_bias_correction=True, ignored_scope=scope)
