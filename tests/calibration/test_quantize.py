"""Q/DQ INT8 models: which ops are quantized (and which never are), flavours, metadata, verification, errors."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from banet.metadata import read_onnx_metadata
from calibration.data import CalibrationDataError, CalibrationSource
from calibration.int8 import (
    FLAVOURS,
    QuantizeError,
    check_source_fits,
    data_path_nodes,
    group_of,
    node_groups,
    quantizable_nodes,
    quantize_int8,
    ranges_cache_path,
)
from calibration.quantize import main, variant

SOURCE = CalibrationSource(count=4, size=(48, 48), batch=2)
SHAPES = ((1, 48, 48), (2, 38, 50))


@pytest.fixture(scope="module")
def quantized(tiny_onnx, tmp_path_factory, calibration_cache):
    folder = tmp_path_factory.mktemp("int8")
    return {flavour: quantize_int8(tiny_onnx, folder / f"tiny_int8_{flavour}.onnx", SOURCE, flavour,
                                   verify_shapes=SHAPES, threads=1) for flavour in ("ort", "trt", "ov")}


def _structure(path):
    """(graph, producer by tensor, nodes whose inputs come from a DequantizeLinear, initialisers)."""
    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    fed = {node.name for node in graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
           and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)}
    return graph, producer, fed, {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def test_group_names_follow_the_module_tree():
    assert group_of("/en_layer1/en_layer1.0/Conv") == "en_layer1"
    assert group_of("/BAM_2/BA/mask_conv_1/Conv") == "BAM_2/BA.mask"
    assert group_of("/BAM_2/BA/conv_5/Conv") == "BAM_2/BA"
    assert group_of("/BAM_2/content_conv_d3_2/Conv") == "BAM_2/CPDC"
    assert group_of("/BAM_2/input_conv/Conv") == "BAM_2/input_conv"
    assert group_of("/BAM_2/final_conv/Conv") == "BAM_2/fusion"
    assert group_of("/Add") == "global_residual" and group_of("/Concat") == "skip_concat"


def test_index_arithmetic_and_pooling_matmuls_are_never_candidates(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    on_path = data_path_nodes(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    assert not any(by_name[n].op_type in ("Floor", "Range", "Cast", "Shape") for n in on_path)
    for flavour in FLAVOURS.values():
        names = quantizable_nodes(model, flavour)
        assert {by_name[n].op_type for n in names} <= set(flavour.op_types)
        # ov: a MatMul is a candidate so that --exclude can keep its image input in float (NNCF decides the rest);
        # its pooling matrix never gets Q/DQ (test_ov_flavour_structure)
        assert ("MatMul" in {by_name[n].op_type for n in names}) == (flavour.name == "ov")
    groups = node_groups(quantizable_nodes(model, FLAVOURS["ort"]))
    assert {"en_layer1", "BAM_1/BA", "BAM_2/BA.mask", "de_layer3", "global_residual"} <= set(groups)


def _weights_quantized(graph, producer) -> set[str]:
    """Names of Conv/ConvTranspose nodes whose weights come through a DequantizeLinear (int8 weights)."""
    return {n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose")
            and producer.get(n.input[1]) is not None and producer[n.input[1]].op_type == "DequantizeLinear"}


def test_ort_flavour_structure(quantized, tiny_onnx):
    graph, producer, fed, inits = _structure(quantized["ort"].path)
    ops = {n.name: n.op_type for n in graph.node}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(n.name in fed for n in convs)  # every conv takes int8 activations...
    assert _weights_quantized(graph, producer) == {n.name for n in convs}  # ...and int8 weights
    assert {ops[n] for n in fed} >= {"Conv", "Add", "Mul", "Concat", "LeakyRelu", "Sigmoid"}
    # the decoder's ConvTranspose runs as an int8 Conv + DepthToSpace (calibration.subpixel), and says so
    assert "ConvTranspose" not in ops.values()
    [subpixel] = [n for n in convs if n.name.endswith("_subpixel")]
    [d2s] = [n for n in graph.node if n.op_type == "DepthToSpace"]
    assert subpixel.name.startswith("/de_layer1/") and producer[d2s.input[0]].op_type == "QuantizeLinear"
    assert producer[producer[d2s.input[0]].input[0]] is subpixel  # the Conv's uint8 output, rearranged as it is
    rewrites = json.loads(read_onnx_metadata(quantized["ort"].path).extra["int8_rewrites"])
    assert rewrites == [subpixel.name.removesuffix("_subpixel") + ": Conv + DepthToSpace"]
    # The strip-pooling index arithmetic is never quantized, and the pooling matrices reach the MatMuls in float
    assert not any(ops[n] in ("Floor", "Div", "ReduceSum", "Range", "Cast", "Less", "Greater") for n in fed)
    _pooling_matrices_reach_matmuls_in_float(graph, producer, tiny_onnx)
    for n in graph.node:
        if n.op_type == "QuantizeLinear":  # activations: uint8, asymmetric
            assert inits[n.input[2]].dtype == np.uint8
    for conv in convs:  # weights: int8 per output channel, symmetric
        dq = producer[conv.input[1]]
        q_weight, scale, zero = (inits[i] for i in dq.input)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        out_channels = q_weight.shape[0 if conv.op_type == "Conv" else 1]
        assert q_weight.dtype == np.int8 and scale.shape == (out_channels,) and not zero.any()
        assert axis == (0 if conv.op_type == "Conv" else 1)


def test_trt_flavour_is_symmetric_on_conv_inputs_only(quantized):
    graph, producer, fed, inits = _structure(quantized["trt"].path)
    convs = {n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose")}
    assert _weights_quantized(graph, producer) == convs and convs <= fed
    assert not any(n.op_type in ("Floor", "Div", "ReduceSum") for n in graph.node if n.name in fed)
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in quantizers)
    conv_outputs = {n.output[0] for n in graph.node if n.op_type in ("Conv", "ConvTranspose")}
    assert not any(n.input[0] in conv_outputs for n in quantizers)  # TensorRT places Q/DQ at inputs


def test_trt_flavour_follows_tensorrts_explicit_quantization_rules(quantized):
    """Every rule calibration.quantize.TRT_OPTIONS cites, checked on the written file."""
    graph, producer, _, inits = _structure(quantized["trt"].path)
    dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    # no int32 anywhere (bias DequantizeLinear on int32 is what NVIDIA's parser refuses), only int8 behind a DQ
    assert not [name for name, value in inits.items() if value.dtype == np.int32]
    assert dequantizers and all(inits[n.input[0]].dtype == np.int8 for n in dequantizers if n.input[0] in inits)
    # symmetric: every zero point, activation or weight, is 0
    assert all(not inits[n.input[2]].any() for n in dequantizers)
    for conv in (n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")):
        if len(conv.input) > 2:  # biases stay float initialisers, read directly by the convolution
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32, conv.name
        dq = producer[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        out_axis = 0 if conv.op_type == "Conv" else 1  # ConvTranspose weights are (in, out, kh, kw)
        assert axis == out_axis and scale.shape == (weight.shape[out_axis],), conv.name
    # residual adds after a convolution: the residual input is dequantized, the convolution branch is not
    # (the folded attention's own sums of strip contexts, inside /BA/, are not residuals)
    residual = [n for n in graph.node if n.op_type == "Add" and "/BA/" not in n.name
                and sum(producer.get(i) is not None and producer[i].op_type == "Conv" for i in n.input) == 1]
    assert len(residual) == 3  # BAM_1, BAM_2 and the global residual of the two-BAM test network
    for add in residual:
        kinds = sorted(producer[i].op_type if i in producer else "graph input" for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)


def test_trt_flavour_options_state_the_guides_rules():
    from calibration.int8 import TRT_OPTIONS

    options = FLAVOURS["trt"].extra_options("minmax", 99.999)
    assert options["QuantizeBias"] is False and options["DedicatedQDQPair"] is False
    assert options["ActivationSymmetric"] is options["WeightSymmetric"] is True
    assert options["QDQOpTypePerChannelSupportToAxis"] == {"Conv": 0, "ConvTranspose": 1}
    assert set(TRT_OPTIONS) <= set(options) and FLAVOURS["trt"].tensorrt and not FLAVOURS["ort"].tensorrt
    assert "QuantizeBias" not in FLAVOURS["ort"].extra_options("minmax", 99.999)  # ORT runs int32 biases fast


# -- NVIDIA's ONNX parser: every TensorRT-bound file is parsed before it is kept ------------------------------------
def _parser():
    """The TensorRT-family parser installed here (CI: TensorRT for RTX), or skip."""
    from export.trt_build import installed_runtime

    runtime = installed_runtime()
    if runtime is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed (pip install '.[rtx]')")
    return runtime


def test_trt_flavour_parses_with_nvidias_parser(quantized, tiny_onnx, tmp_path):
    from export.trt.builder import parse_onnx

    runtime = _parser()
    report = parse_onnx(quantized["trt"].path, runtime)
    assert report.ok and report.layers > 100, report
    recorded = quantized["trt"].tensorrt_parse
    assert recorded == {"parser": runtime.label, "layers": report.layers}
    props = {p.key: p.value for p in onnx.load(str(quantized["trt"].path), load_external_data=False).metadata_props}
    assert json.loads(props["banet.int8_tensorrt_parse"]) == recorded
    # a mixed-precision file (blocks kept in float, as the sensitivity search leaves them) is held to it too
    mixed = quantize_int8(tiny_onnx, tmp_path / "mixed.onnx", SOURCE, "trt", exclude_groups=["de_layer3", "BAM_1/BA"],
                          verify_shapes=((1, 32, 32),), threads=1)
    assert mixed.tensorrt_parse["layers"] > 100 and parse_onnx(mixed.path, runtime).ok
    assert not quantized["ort"].tensorrt_parse  # the ort flavour is not meant for TensorRT


def test_planted_int32_bias_is_refused_in_one_line(tiny_onnx, tmp_path, monkeypatch, capfd):
    """ONNX Runtime's default int32 bias Q/DQ (the bug of issue 19), planted: the command refuses the file."""
    import dataclasses

    _parser()
    planted = dataclasses.replace(FLAVOURS["trt"], options={**FLAVOURS["trt"].options, "QuantizeBias": True})
    monkeypatch.setitem(FLAVOURS, "trt", planted)
    output = tmp_path / "planted.onnx"
    code = main(["--onnx", str(tiny_onnx), "--flavour", "trt", "--calib-count", "4", "--calib-size", "48x48",
                 "--calib-batch", "2", "--output", str(output)])
    err = capfd.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("error: the ONNX parser of ") and "Traceback" not in err, err
    assert re.search(r"at node \S+bias_DequantizeLinear: input has type Int32 but must have type .*Int8", err), err
    assert not output.exists() and (tmp_path / "planted.failed.onnx").is_file()


def test_without_a_parser_the_check_is_skipped_and_says_so(tiny_onnx, tmp_path, monkeypatch, caplog):
    from export.trt import builder

    monkeypatch.setattr(builder, "installed_runtime", lambda: None)
    with caplog.at_level("WARNING", logger="calibration.int8"):
        result = quantize_int8(tiny_onnx, tmp_path / "q.onnx", SOURCE, "trt", verify_shapes=(), threads=1)
    assert "skipped" in result.tensorrt_parse and result.path.is_file()
    assert any("TensorRT parser check skipped" in r.getMessage() for r in caplog.records)


def _int8_activations(tensor, producer, through=True) -> bool:
    """Whether ``tensor`` is a dequantized activation (a DequantizeLinear fed by a QuantizeLinear), or (``through``)
    a Concat or Split of such tensors only: NNCF quantizes a Concat's inputs with one shared scale, and OpenVINO
    carries the int8 data through it into the convolution that reads it."""
    node = producer.get(tensor)
    if node is None:
        return False
    if node.op_type == "DequantizeLinear":
        return node.input[0] in producer and producer[node.input[0]].op_type == "QuantizeLinear"
    if through and node.op_type in ("Concat", "Split"):
        return all(_int8_activations(i, producer) for i in node.input[:1 if node.op_type == "Split" else None])
    return False


def _pooling_matrices_reach_matmuls_in_float(graph, producer, tiny_onnx):
    """The pooling matrices (built from the image size) reach the MatMuls in float: only their feature input may
    be a dequantized activation."""
    on_path = data_path_nodes(onnx.load(str(tiny_onnx)).graph)
    fp32_producer = {o: n for n in onnx.load(str(tiny_onnx)).graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls
    for matmul in matmuls:
        for tensor in matmul.input:
            if tensor in fp32_producer and fp32_producer[tensor].name not in on_path:
                assert producer[tensor].op_type != "DequantizeLinear", matmul.name


def test_ov_flavour_structure(quantized, tiny_onnx):
    """NNCF's placement: every convolution takes int8 activations and int8 per-channel weights (what makes OpenVINO
    run it in int8), symmetric activations, the pooling matrices in float, and the global residual add reading the
    float input (NNCF's ranges clip the input's extremes; quantized, that add would carry the clipping out)."""
    result = quantized["ov"]
    graph, producer, fed, inits = _structure(result.path)
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(_int8_activations(n.input[0], producer) for n in convs), \
        [n.name for n in convs if not _int8_activations(n.input[0], producer)]
    assert _weights_quantized(graph, producer) == {n.name for n in convs}
    _pooling_matrices_reach_matmuls_in_float(graph, producer, tiny_onnx)
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric activations
    [residual] = [n for n in graph.node if n.output[0] == graph.output[0].name]
    assert group_of(residual.name) == "global_residual" and residual.op_type == "Add"
    assert residual.name not in fed
    assert "input" in residual.input  # the network input itself, not a dequantized copy
    meta = read_onnx_metadata(result.path)
    assert json.loads(meta.extra["int8_calibration"])["method"].startswith("nncf")
    readers = [n.name for n in graph.node if any(_int8_activations(i, producer, through=False) for i in n.input)
               and n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert int(meta.extra["int8_quantized_nodes"]) == len(readers) and result.quantized_nodes == readers


def test_ov_flavour_is_reproducible_and_takes_exclusions(quantized, tiny_onnx, tmp_path):
    again = quantize_int8(tiny_onnx, tmp_path / "again.onnx", SOURCE, "ov", verify_shapes=SHAPES, threads=1)
    assert again.path.read_bytes() == quantized["ov"].path.read_bytes()  # same data, same file, byte for byte
    kept = quantize_int8(tiny_onnx, tmp_path / "kept.onnx", SOURCE, "ov", exclude_groups=["de_layer3", "BAM_1/BA"],
                         verify_shapes=((1, 32, 32),), threads=1, heldout=False)
    graph, producer, fed, _ = _structure(kept.path)
    groups = node_groups(quantizable_nodes(onnx.load(str(tiny_onnx)), FLAVOURS["ov"]))
    kept_float = set(groups["de_layer3"] + groups["BAM_1/BA"])
    assert kept_float and not kept_float & fed
    assert fed and len(fed) < len(quantized["ov"].quantized_nodes)


def test_ov_flavour_refusals(tiny_onnx, tmp_path, monkeypatch, capsys):
    with pytest.raises(QuantizeError, match="the ov flavour calibrates with NNCF.s own ranges; --method entropy "
                                            "is for the ONNX Runtime flavours"):
        quantize_int8(tiny_onnx, tmp_path / "x.onnx", SOURCE, "ov", method="entropy")
    assert main(["--onnx", str(tiny_onnx), "--flavour", "ov", "--method", "entropy"]) == 2
    assert "--flavour ov is calibrated with NNCF's own ranges" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "nncf", None)  # as where nncf is not installed
    with pytest.raises(QuantizeError, match=r"^the ov flavour is made with NNCF, which is not installed .*"
                                            r"pip install nncf") as info:
        quantize_int8(tiny_onnx, tmp_path / "x.onnx", SOURCE, "ov", verify_shapes=(), heldout=False)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())


def test_metadata_and_verification(quantized, tiny_onnx):
    for flavour, result in quantized.items():
        meta = read_onnx_metadata(result.path)
        assert meta.precision == "int8" and meta.extra["int8_flavour"] == flavour
        assert meta.config == read_onnx_metadata(tiny_onnx).config
        assert json.loads(meta.extra["int8_calibration"])["count"] == 4
        assert set(result.verification) == {"1x48x48", "2x38x50"}
        assert 25 < result.worst_psnr_db < 100, result.verification  # quantized, and right at odd sizes too
        props = {p.key: p.value for p in onnx.load(str(result.path), load_external_data=False).metadata_props}
        assert "banet.int8_verification" in props


def test_runtime_runs_the_int8_model(quantized):
    from runtime import Deblurrer

    image = (np.random.default_rng(0).random((30, 42, 3)) * 255).astype(np.uint8)
    with Deblurrer(quantized["ort"].path, threads=1) as deblur:
        out = deblur(image)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_excluded_blocks_stay_float_and_ranges_are_reused(tiny_onnx, tmp_path, quantized, monkeypatch):
    assert ranges_cache_path(tiny_onnx, SOURCE, FLAVOURS["ort"], "minmax", 99.999, subpixel=True).is_file()
    monkeypatch.setattr(CalibrationSource, "reader", lambda *a, **k: pytest.fail("recalibrated despite the cache"))
    result = quantize_int8(tiny_onnx, tmp_path / "x.onnx", SOURCE, "ort", exclude_groups=["de_layer3", "BAM_1/BA"],
                           verify_shapes=((1, 32, 32),), threads=1)
    graph, producer, _, _ = _structure(result.path)
    groups = node_groups(quantizable_nodes(onnx.load(str(tiny_onnx)), FLAVOURS["ort"]))
    kept_float = {n for n in groups["de_layer3"] + groups["BAM_1/BA"] if "Conv" in n}
    int8_weights = _weights_quantized(graph, producer)
    assert kept_float and not kept_float & int8_weights
    assert int8_weights and int8_weights < _weights_quantized(*_structure(quantized["ort"].path)[:2])
    assert len(result.quantized_nodes) < len(quantized["ort"].quantized_nodes)
    assert json.loads(read_onnx_metadata(result.path).extra["int8_excluded_groups"]) == ["BAM_1/BA", "de_layer3"]


def test_a_float_conv_transpose_is_not_rewritten(tiny_onnx, tmp_path, quantized):
    """The sub-pixel form only pays in int8: with de_layer1 kept in float, and in the trt flavour (TensorRT has an
    int8 ConvTranspose), the ConvTranspose stays. The two graphs keep their calibrated ranges apart (the rewritten
    one has a tensor more)."""
    result = quantize_int8(tiny_onnx, tmp_path / "x.onnx", SOURCE, "ort", exclude_groups=["de_layer1"],
                           verify_shapes=((1, 32, 32),), threads=1)
    kept = ranges_cache_path(tiny_onnx, SOURCE, FLAVOURS["ort"], "minmax", 99.999)
    assert kept.is_file() and kept != ranges_cache_path(tiny_onnx, SOURCE, FLAVOURS["ort"], "minmax", 99.999,
                                                        subpixel=True)
    for path in (result.path, quantized["trt"].path):
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ops.count("ConvTranspose") == 1 and "DepthToSpace" not in ops
        assert json.loads(read_onnx_metadata(path).extra["int8_rewrites"]) == []


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(tiny_onnx, tmp_path, method):
    small = CalibrationSource(count=2, size=(32, 32))
    result = quantize_int8(tiny_onnx, tmp_path / "m.onnx", small, "ort", method, verify_shapes=((1, 32, 32),),
                           threads=1)
    assert json.loads(read_onnx_metadata(result.path).extra["int8_calibration"])["method"] == method
    assert result.worst_psnr_db > 20


def test_refusals(tiny_onnx, tmp_path, quantized):
    with pytest.raises(QuantizeError, match="exists; pass --force"):
        quantize_int8(tiny_onnx, quantized["ort"].path, SOURCE)
    with pytest.raises(QuantizeError, match="unknown group"):
        quantize_int8(tiny_onnx, tmp_path / "a.onnx", SOURCE, exclude_groups=["BAM_9/BA"])
    with pytest.raises(QuantizeError, match="unknown flavour"):
        quantize_int8(tiny_onnx, tmp_path / "a.onnx", SOURCE, "tflite")
    with pytest.raises(QuantizeError, match="int8 model"):
        quantize_int8(quantized["ort"].path, tmp_path / "a.onnx", SOURCE)
    with pytest.raises(QuantizeError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "a.onnx", SOURCE)
    static = SimpleNamespace(shape_mode="static", static_shape=(1, 720, 1280))
    with pytest.raises(CalibrationDataError, match="--calib-size 720x1280"):
        check_source_fits(static, SOURCE)


def test_bad_calibration_folder_fails_the_command_cleanly(tiny_onnx, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["--onnx", str(tiny_onnx), "--flavour", "ort", "--calib-dir", str(tmp_path / "empty"),
                 "--output", str(tmp_path / "q.onnx")])
    assert code == 1 and "holds no images" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


def test_cli_list_groups(tiny_onnx, capsys):
    assert main(["--onnx", str(tiny_onnx), "--list-groups"]) == 0
    out = capsys.readouterr().out
    assert "ort:" in out and "trt:" in out and "BAM_2/BA.mask" in out
    ov = out[out.index("ov:"):]
    assert re.search(r"global_residual +\d+ nodes  \(always in float in this flavour\)", ov)
    assert "always in float" not in out[:out.index("ov:")]


@pytest.mark.parametrize("flavour", ["trt", "ov"])
def test_cli_auto_exclude_records_the_search(tiny_onnx, tmp_path, capsys, flavour):
    out = tmp_path / "auto.onnx"
    code = main(["--onnx", str(tiny_onnx), "--flavour", flavour, "--auto-exclude", "10", "--calib-count", "2",
                 "--calib-size", "32x32", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and f"INT8 sensitivity ({flavour}, minmax)" in printed
    search = json.loads(read_onnx_metadata(out).extra["int8_sensitivity"])
    assert search["budget_met"] and search["excluded"] == []
    # every block in int8 meets 10 dB: one quantization, no ranking (before: one more per block, 17 here)
    assert search["groups"] == [] and "not ranked: every block in int8 meets the budget" in printed


def test_a_bad_percentile_is_refused_before_any_work(tmp_path, capsys):
    """argparse refuses it (exit 2) before the missing ONNX is even looked at, let alone calibrated (issue 29)."""
    for value, why in (("200", "200 is not a percentile: it must be in \\(0, 100\\]"), ("0", "0 is not a percentile"),
                       ("lots", "not a number: 'lots'")):
        with pytest.raises(SystemExit) as stop:
            main(["--onnx", str(tmp_path / "missing.onnx"), "--method", "percentile", "--percentile", value])
        assert stop.value.code == 2
        assert re.search(f"--percentile: {why}", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_variant_names():
    assert variant("trt", "minmax", 99.999, ["de_layer3", "de_layer2"], None) == ""  # the flavour's defaults
    assert variant("ort", "minmax", 99.999, [], None) == ""
    assert variant("trt", "minmax", 99.999, [], None) == "float-none"
    assert variant("ort", "minmax", 99.999, ["BAM_4/BA.mask"], None) == "float-BAM_4-BA-mask"
    assert variant("trt", "minmax", 99.999, [], 48) == "auto48db"
    assert variant("ort", "percentile", 99.9, [], None) == "percentile99.9"
    assert variant("ort", "entropy", 99.999, ["de_layer3"], None) == "entropy_float-de_layer3"
    assert variant("trt", "minmax", 99.999, ["de_layer2", "de_layer3"], None, Path("my blurred/")) == "calib-my-blurred"
    assert len(variant("ort", "minmax", 99.999, [f"BAM_{i}/BA.mask" for i in range(9)], None)) == len("float-") + 10


def test_other_settings_never_replace_the_default_file_and_wrote_is_said_once(tiny_onnx, tmp_path, capsys, caplog):
    """The default Q/DQ file (what drift, benchmarks and INT8 builds read) stays byte-identical when a run with
    other exclusions follows, even with --force: the variant gets its own name. Each file is announced once."""
    import logging
    import shutil

    fp32 = shutil.copy(tiny_onnx, tmp_path / "tiny.onnx")
    common = ["--onnx", str(fp32), "--flavour", "trt", "--calib-count", "2", "--calib-size", "32x32"]
    with caplog.at_level(logging.INFO):
        assert main(common) == 0
        default = tmp_path / "tiny_int8_trt.onnx"
        before = default.read_bytes()
        assert main([*common, "--exclude", "--force"]) == 0  # quantize everything
    out = capsys.readouterr().out
    logged = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.INFO and r.getMessage().startswith("wrote")]
    assert not logged and out.count("wrote") == 2, (out, logged)
    assert f"wrote {default}" in out and f"wrote {tmp_path / 'tiny_int8_trt_float-none.onnx'}" in out
    assert default.read_bytes() == before
    assert read_onnx_metadata(tmp_path / "tiny_int8_trt_float-none.onnx").precision == "int8"
    assert main(common) == 1 and "exists" in capsys.readouterr().err  # the default again: refused, not replaced
    assert default.read_bytes() == before
