"""calibration.subpixel: BANet's ConvTranspose (kernel 4, stride 2, padding 1) rewritten as Conv + DepthToSpace
computes the same outputs on odd shapes and batches; other transposed convolutions, and nodes not asked for, are
left as they are; a DepthToSpace between Q/DQ of one scale runs on the int8 tensor."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.subpixel import depth_to_space_in_int8, rewrite_conv_transposes, subpixel_weights


def _graph(kernel: int = 4, stride: int = 2, pad: int = 1, bias: bool = True, cin: int = 6,
           cout: int = 5) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((cin, cout, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("ConvTranspose", inputs, ["up"], name="/de_layer1/de_layer1.0/ConvTranspose",
                            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    relu = helper.make_node("LeakyRelu", ["up"], ["y"], name="/de_layer1/de_layer1.1/LeakyRelu", alpha=0.2)
    graph = helper.make_graph([node, relu], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                ["n", cin, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cout, "oh", "ow"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 6, 7, 9), (2, 6, 13, 4), (1, 6, 1, 1), (3, 6, 16, 21)])
def test_the_rewrite_computes_the_same_outputs(shape, bias):
    original = _graph(bias=bias)
    rewritten = _graph(bias=bias)
    assert rewrite_conv_transposes(rewritten) == ["/de_layer1/de_layer1.0/ConvTranspose"]
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops == ["Conv", "DepthToSpace", "LeakyRelu"]
    assert [i.name for i in rewritten.graph.initializer] == [  # the transposed weights are gone
        "/de_layer1/de_layer1.0/ConvTranspose_subpixel_weight", "/de_layer1/de_layer1.0/ConvTranspose_subpixel_bias"]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected, got = _run(original, x), _run(rewritten, x)
    assert got.shape == expected.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_weights_are_only_rearranged():
    """Every ConvTranspose tap appears exactly once per output phase set: the Conv weights hold the same values
    (plus the zero taps of the 3x3 windows), the bias once per phase."""
    rng = np.random.default_rng(2)
    weight, bias = rng.standard_normal((3, 2, 4, 4)).astype(np.float32), np.array([1.5, -2.0], np.float32)
    conv_weight, conv_bias = subpixel_weights(weight, bias)
    assert conv_weight.shape == (8, 3, 3, 3) and conv_weight.dtype == np.float32
    assert np.count_nonzero(conv_weight) == weight.size
    np.testing.assert_array_equal(np.sort(conv_weight[conv_weight != 0]), np.sort(weight.ravel()))
    np.testing.assert_array_equal(conv_bias, [1.5] * 4 + [-2.0] * 4)


@pytest.mark.parametrize("kwargs", [{"kernel": 3}, {"stride": 1}, {"pad": 0}])
def test_other_transposed_convolutions_are_left_alone(kwargs):
    model = _graph(**kwargs)
    before = model.SerializeToString()
    assert rewrite_conv_transposes(model) == []
    assert model.SerializeToString() == before


def test_only_the_named_nodes_are_rewritten():
    model = _graph()
    assert rewrite_conv_transposes(model, only={"another node"}) == []
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose", "LeakyRelu"]
    assert rewrite_conv_transposes(model, only={"/de_layer1/de_layer1.0/ConvTranspose"})


def _quantized_depth_to_space(dq_scale: float = 0.5, q_scale: float = 0.5) -> onnx.ModelProto:
    """uint8 -> DequantizeLinear -> DepthToSpace -> QuantizeLinear -> DequantizeLinear -> y."""
    inits = [numpy_helper.from_array(np.array(dq_scale, np.float32), "s1"),
             numpy_helper.from_array(np.array(3, np.uint8), "z1"),
             numpy_helper.from_array(np.array(q_scale, np.float32), "s2"),
             numpy_helper.from_array(np.array(3, np.uint8), "z2")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s1", "z1"], ["xf"], name="dq"),
             helper.make_node("DepthToSpace", ["xf"], ["up"], name="d2s", blocksize=2, mode="CRD"),
             helper.make_node("QuantizeLinear", ["up", "s2", "z2"], ["uq"], name="q"),
             helper.make_node("DequantizeLinear", ["uq", "s2", "z2"], ["y"], name="dq2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 8, 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 6, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_depth_to_space_moves_onto_the_int8_tensor_with_the_same_outputs():
    original, moved = _quantized_depth_to_space(), _quantized_depth_to_space()
    assert depth_to_space_in_int8(moved) == 1
    onnx.checker.check_model(moved)
    assert [n.op_type for n in moved.graph.node] == ["DepthToSpace", "DequantizeLinear"]
    x = np.random.default_rng(4).integers(0, 256, (2, 8, 3, 5), dtype=np.uint8)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (original, moved)]
    np.testing.assert_array_equal(run[1], run[0])


def test_depth_to_space_stays_where_the_scales_differ():
    """Requantizing to another scale changes values: the float round trip is then real work and stays."""
    model = _quantized_depth_to_space(q_scale=0.25)
    assert depth_to_space_in_int8(model) == 0
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "DepthToSpace", "QuantizeLinear",
                                                     "DequantizeLinear"]


def test_only_the_transposed_weights_leave_the_initializers():
    """Another initializer no node reads (a file's own business) is kept; the ConvTranspose's weight and bias go."""
    model = _graph()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unrelated"))
    rewrite_conv_transposes(model)
    names = {i.name for i in model.graph.initializer}
    assert "unrelated" in names and not names & {"w", "b"}


def test_depth_to_space_moves_with_unnamed_nodes():
    model = _quantized_depth_to_space()
    for node in model.graph.node:
        node.name = ""
    assert depth_to_space_in_int8(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DepthToSpace", "DequantizeLinear"]
