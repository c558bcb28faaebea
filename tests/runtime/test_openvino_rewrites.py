"""The OpenVINO backend's exact rewrite: a channel Concat read by a Convolution becomes a sum of Convolutions, the
same outputs to float rounding; graphs without the pattern (INT8 Q/DQ files) are left as they are."""

import numpy as np
import pytest

openvino = pytest.importorskip("openvino")

from banet.defaults import DEFAULT_ONNX  # noqa: E402
from banet.errors import OptionError  # noqa: E402
from runtime.backends.openvino_backend import OpenVinoBackend  # noqa: E402
from runtime.backends.openvino_rewrites import split_concat_convolutions  # noqa: E402
from tests.runtime.test_bf16 import _cpu_has_bf16  # noqa: E402

INT8_ONNX = DEFAULT_ONNX.with_name("banet_default_int8_ort.onnx")


def _types(model) -> list[str]:
    return [op.get_type_name() for op in model.get_ordered_ops()]


def _toy(readers: int = 1, constant_weights: bool = True):
    """x -> two convolutions (16 and 8 channels) -> channel Concat -> Convolution (and a second reader if asked)."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 3, 20, 28], np.float32, name="x")

    def conv(source, out, inp, dilation=1, weights=None):
        weights = ops.constant(rng.standard_normal((out, inp, 3, 3)).astype(np.float32)) if weights is None else weights
        return ops.convolution(source, weights, [1, 1], [dilation] * 2, [dilation] * 2, [dilation] * 2)

    a, b = conv(x, 16, 3), conv(x, 8, 3, dilation=3)
    cat = ops.concat([a, b], 1)
    weights = None if constant_weights else ops.parameter([4, 24, 3, 3], np.float32, name="w")
    outputs = [conv(cat, 4, 24, weights=weights)] + [ops.relu(cat) for _ in range(readers - 1)]
    parameters = [x] + ([] if constant_weights else [weights])
    return openvino.Model([o.output(0) for o in outputs], parameters, "toy")


def _run(model, *inputs):
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [compiled(list(inputs))[o] for o in compiled.outputs]


def test_a_concat_read_by_a_convolution_becomes_a_sum_with_the_same_outputs():
    x = np.random.default_rng(1).standard_normal((1, 3, 20, 28)).astype(np.float32)
    before = _run(_toy(), x)[0]
    model = _toy()
    assert split_concat_convolutions(model) == 1
    assert "Concat" not in _types(model) and _types(model).count("Convolution") == 4
    after = _run(model, x)[0]
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()
    assert not np.array_equal(after, np.zeros_like(after))


def test_other_concats_are_left_alone():
    model = _toy(readers=2)  # the Concat is read by a ReLU too
    assert split_concat_convolutions(model) == 0 and "Concat" in _types(model)
    model = _toy(constant_weights=False)  # weights computed at run time
    assert split_concat_convolutions(model) == 0 and "Concat" in _types(model)
    import openvino.opset13 as ops

    unranked = [ops.parameter(openvino.PartialShape.dynamic(), np.float32) for _ in range(2)]
    cat = ops.concat(unranked, 1)  # rank unknown until run time: not a 4-D channel Concat it can split
    model = openvino.Model([ops.relu(cat).output(0)], unranked, "unranked")
    assert split_concat_convolutions(model) == 0
    int8 = openvino.Core().read_model(str(INT8_ONNX))  # Q/DQ: a quantization step reads each Concat
    assert split_concat_convolutions(int8) == 0


def test_the_backend_rewrites_the_default_model_and_keeps_its_outputs():
    batch = np.random.default_rng(2).random((2, 3, 40, 72), dtype=np.float32)
    rewritten = OpenVinoBackend(DEFAULT_ONNX, threads=1, compile_cache=None, rewrite=True)
    written = OpenVinoBackend(DEFAULT_ONNX, threads=1, compile_cache=None)  # f32: as written (measured faster)
    assert rewritten.rewrites == 9 and written.rewrites == 0  # 2 per BAM and the decoder's skip concatenation
    assert "9 concatenations split" in rewritten.describe() and "split" not in written.describe()
    out, reference = rewritten.run(batch), written.run(batch)
    psnr = 10 * np.log10(1.0 / np.mean((out - reference) ** 2))
    assert psnr > 120, psnr  # float rounding only
    with pytest.raises(OptionError, match="rewrite must be True, False or None"):
        OpenVinoBackend(DEFAULT_ONNX, rewrite="yes")


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no bfloat16 units (OpenVINO capabilities lack BF16)")
def test_bfloat16_rewrites_by_default():
    kwargs = dict(threads=1, compile_cache=None, inference_precision="bf16")
    assert OpenVinoBackend(DEFAULT_ONNX, **kwargs).rewrites == 9
    assert OpenVinoBackend(DEFAULT_ONNX, rewrite=False, **kwargs).rewrites == 0
