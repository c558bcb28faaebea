"""Exact graph rewrites OpenVINO's CPU plugin runs faster, applied to the model it read before compiling it.

The one rewrite: a channel Concat whose only reader is a Convolution becomes one Convolution per Concat input (the
weights split along their input channels) summed, ``conv(concat(a, b)) = conv_a(a) + conv_b(b)``. OpenVINO lays
convolution activations out channels-last (NHWC) and copies a channel Concat there pixel by pixel with its reference
kernel; the split convolutions read their inputs where they are, and the sums are element-wise adds.
The backend applies it in bfloat16, where it measured faster on the default model (720x1280, Intel Xeon with AMX,
``python -m benchmarks.run``, peers ``openvino bf16 (as written)`` / ``openvino fp32 (rewritten)``: see
docs/benchmarks.md); in f32 it measured no faster, and ONNX Runtime runs the split graph slower (its NCHW Concat
is a plain copy), so the shipped files keep the Concat.

Q/DQ (INT8) files are left as they are: there a Concat is read by a quantization step, not by a Convolution.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def split_concat_convolutions(model) -> int:
    """Rewrite every channel Concat read only by a Convolution with constant weights as a sum of Convolutions, in
    place on the OpenVINO ``model``; the number rewritten. Equal to float rounding (the sum's order)."""
    import openvino.opset13 as ops

    rewritten = 0
    for concat in model.get_ordered_ops():
        conv = _convolution_reading(concat)
        if conv is None:
            continue
        weights = conv.input_value(1).get_node().get_data()
        attrs = conv.get_attributes()
        total, start = None, 0
        for k, source in enumerate(concat.inputs()):
            channels = source.get_partial_shape()[1].get_length()
            part = ops.convolution(source.get_source_output(),
                                   ops.constant(np.ascontiguousarray(weights[:, start:start + channels])),
                                   attrs["strides"], attrs["pads_begin"], attrs["pads_end"], attrs["dilations"],
                                   attrs["auto_pad"])
            part.set_friendly_name(f"{conv.get_friendly_name()}/split{k}")
            start += channels
            if total is not None:
                part = ops.add(total, part)
                part.set_friendly_name(f"{conv.get_friendly_name()}/sum{k}")
            total = part
        conv.output(0).replace(total.output(0))
        rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
        log.debug("OpenVINO: %d channel concatenations split into their convolutions", rewritten)
    return rewritten


def _convolution_reading(concat):
    """The Convolution that alone reads ``concat`` when it is a channel Concat of static-channel 4-D tensors into a
    Convolution with constant weights, else None."""
    if concat.get_type_name() != "Concat":
        return None
    rank = concat.get_output_partial_shape(0).rank
    if rank.is_dynamic or rank.get_length() != 4:
        return None
    if concat.get_attributes()["axis"] not in (1, -3):
        return None
    readers = [target.get_node() for target in concat.output(0).get_target_inputs()]
    if len(readers) != 1 or readers[0].get_type_name() != "Convolution":
        return None
    conv = readers[0]
    if conv.input_value(1).get_node().get_type_name() != "Constant":
        return None
    if any(source.get_partial_shape()[1].is_dynamic for source in concat.inputs()):
        return None
    return conv
