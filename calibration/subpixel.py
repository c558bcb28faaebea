"""The decoder's transposed convolution as a sub-pixel convolution, for INT8 files that CPUs run.

BANet upsamples once, with ``ConvTranspose(kernel 4, stride 2, padding 1)``. ONNX Runtime's CPU provider has no
int8 kernel for a Q/DQ ConvTranspose and runs it in float between a DequantizeLinear and a QuantizeLinear (about a
tenth of the INT8 file's time at 720x1280 in ``python -m benchmarks.profile --backend onnxruntime``), and OpenVINO
runs it in f32 too. Measured at 720x1280 (``benchmarks/results/subpixel-int8_AMD-EPYC_2026-12-06.md``, the previous
file in the same run): INT8 2-4% faster on ONNX Runtime and on OpenVINO, ONNX Runtime's peak memory lower
(``ort_memory_subpixel_AMD-EPYC_2026-12-06.md``). The same operation is a 3x3 convolution with
four times the output channels, one per output phase, followed by ``DepthToSpace`` (CRD, block 2): output pixel
``(2i + a, 2j + b)`` reads input rows ``i - 1 .. i + 1`` and columns ``j - 1 .. j + 1`` with the weights of the
kernel taps that land on it (two of three in each direction; the third is zero). Both engines run that Conv in
int8. It does 2.25x the multiply-adds, so FP32 files keep the ConvTranspose (it measured slower there); the
``ort`` flavour rewrites the graph before calibration (:attr:`calibration.int8.Flavour.subpixel`), and after
quantization runs the DepthToSpace on the Conv's uint8 output (:func:`depth_to_space_in_int8`).

The rewrite is exact in float64 arithmetic (the weights are only rearranged) and keeps the node's name as the new
Conv's prefix, so the block tables and ``--exclude de_layer1`` see the same block. A graph's convolution count
(Conv + ConvTranspose, :func:`banet.metadata.check_signature`) is unchanged.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

#: the only transposed convolution rewritten (BANet's decoder): kernel, stride, padding
KERNEL, STRIDE, PADDING = 4, 2, 1
#: output phase a (row or column offset in the 2x2 block) -> {3x3 window tap: ConvTranspose kernel tap}
_TAPS = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}


def subpixel_weights(weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """ConvTranspose ``weight`` [in, out, 4, 4] (stride 2, padding 1) and ``bias`` [out] as the Conv weight
    [4 * out, in, 3, 3] and bias [4 * out] whose output, through ``DepthToSpace(2, CRD)``, is the same.

    Output channel ``c * 4 + a * 2 + b`` of the Conv is phase (a, b) of channel ``c`` (CRD order)."""
    cin, cout = weight.shape[:2]
    folded = np.zeros((cout, 2, 2, cin, 3, 3), dtype=np.float64)
    for a, rows in _TAPS.items():
        for b, cols in _TAPS.items():
            for dy, ky in rows.items():
                for dx, kx in cols.items():
                    folded[:, a, b, :, dy, dx] = weight[:, :, ky, kx].astype(np.float64).T
    new_bias = np.zeros(cout, np.float64) if bias is None else bias.astype(np.float64)
    return (folded.reshape(4 * cout, cin, 3, 3).astype(weight.dtype),
            np.repeat(new_bias, 4).astype(weight.dtype))


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node, initializers: dict) -> bool:
    """A ConvTranspose this pass can rewrite exactly: BANet's kernel/stride/padding, one group, no dilation or
    output padding, weights (and bias) stored in the file."""
    if node.op_type != "ConvTranspose" or node.input[1] not in initializers:
        return False
    attrs = _attributes(node)
    weight_shape = tuple(initializers[node.input[1]].dims)
    return (len(weight_shape) == 4 and weight_shape[2:] == (KERNEL, KERNEL)
            and list(attrs.get("strides", [1, 1])) == [STRIDE, STRIDE]
            and list(attrs.get("pads", [0, 0, 0, 0])) == [PADDING] * 4
            and attrs.get("group", 1) == 1 and list(attrs.get("dilations", [1, 1])) == [1, 1]
            and not any(attrs.get("output_padding", [])) and "output_shape" not in attrs
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in initializers))


def rewrite_conv_transposes(model, only: Collection[str] | None = None) -> list[str]:
    """Replace every rewritable ConvTranspose of ``model`` (an ``onnx.ModelProto``, changed in place; ``only``:
    just those of these node names) with a Conv and a DepthToSpace; returns the names of the nodes rewritten (in
    graph order)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    rewritten: list[str] = []
    replaced: set[str] = set()  # the ConvTranspose weights and biases
    nodes = []
    for node in graph.node:
        if not _rewritable(node, initializers) or (only is not None and node.name not in only):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = numpy_helper.to_array(initializers[bias_name]) if bias_name else None
        replaced.update(name for name in (node.input[1], bias_name) if name)
        conv_weight, conv_bias = subpixel_weights(weight, bias)
        prefix = node.name or node.output[0]
        weight_name, bias_name, phases = f"{prefix}_subpixel_weight", f"{prefix}_subpixel_bias", f"{prefix}_phases"
        graph.initializer.extend([numpy_helper.from_array(conv_weight, weight_name),
                                  numpy_helper.from_array(conv_bias, bias_name)])
        nodes.append(helper.make_node("Conv", [node.input[0], weight_name, bias_name], [phases],
                                      name=f"{prefix}_subpixel", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [phases], list(node.output), name=f"{prefix}_depth_to_space",
                                      blocksize=STRIDE, mode="CRD"))
        rewritten.append(node.name)
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input}
        # the transposed weights, unless another node still reads them; other initializers stay as they were
        kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def depth_to_space_in_int8(model) -> int:
    """Run each ``DequantizeLinear -> DepthToSpace -> QuantizeLinear`` with one scale and zero point on the int8
    tensor itself (``model``, a quantized ``onnx.ModelProto``, changed in place): DepthToSpace only moves values,
    so the float round trip is a quarter of the bytes moved for nothing, and the float copies were the peak of the
    block (ONNX Runtime's quantizer has no rule for DepthToSpace). Returns how many were moved."""
    from onnx import numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {i.name: i for i in graph.initializer}

    def same(a: str, b: str) -> bool:  # scales and zero points: read only these, never the weights
        if a not in initializers or b not in initializers:
            return False
        x, y = numpy_helper.to_array(initializers[a]), numpy_helper.to_array(initializers[b])
        return x.dtype == y.dtype and np.array_equal(x, y)

    dropped: set[str] = set()  # by output tensor (unique in a graph; node names may be empty)
    moved = 0
    for node in graph.node:
        if node.op_type != "DepthToSpace":
            continue
        dq, after = producer.get(node.input[0]), consumers.get(node.output[0], [])
        if (dq is None or dq.op_type != "DequantizeLinear" or len(consumers[dq.output[0]]) != 1 or len(after) != 1
                or after[0].op_type != "QuantizeLinear" or any(n.output[0] in dropped for n in (dq, after[0]))):
            continue
        q = after[0]
        if len(dq.input) < 3 or len(q.input) < 3 or not (same(dq.input[1], q.input[1])
                                                        and same(dq.input[2], q.input[2])):
            continue
        dropped.update((dq.output[0], q.output[0]))
        node.input[0], node.output[0] = dq.input[0], q.output[0]
        moved += 1
    if moved:
        kept = [n for n in graph.node
                if not (n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] in dropped)]
        del graph.node[:]
        graph.node.extend(kept)
    return moved
