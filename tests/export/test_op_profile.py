"""Layer profiles: ONNX Runtime's events and OpenVINO's counters read into layer times, layers put in the network's
blocks (engine-inserted reorders by the names they carry), summed and ranked; real runs of a tiny network."""

import importlib.util

import numpy as np
import pytest

from banet.errors import OptionError
from calibration.int8 import group_of
from export.op_profile import UNATTRIBUTED, FileProfile, layer_blocks, mean_layers, onnxruntime_layers, profile_file
from runtime.backends.base import LayerTime

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO's profile needs pip install '.[openvino]'")


def _node(name: str, ts: int, dur: int, op: str = "Conv") -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider"}}


def test_onnxruntime_events_become_one_layer_list_per_run():
    events = [{"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
              {"cat": "Session", "name": "model_run", "ts": 200, "dur": 50},
              _node("/BAM_1/input_conv/Conv", 10, 5),  # during session setup: no run
              _node("/BAM_1/input_conv/Conv", 110, 2000),
              {"cat": "Node", "name": "/BAM_1/input_conv/Conv_fence_before", "ts": 111, "dur": 1},
              _node("/de_layer1/de_layer1.0/ConvTranspose", 120, 3000, "ConvTranspose"),
              _node("/BAM_1/input_conv/Conv", 210, 4000)]
    runs = onnxruntime_layers(events)
    assert [[(layer.name, layer.op_type, layer.ms) for layer in run] for run in runs] == [
        [("/BAM_1/input_conv/Conv", "Conv", 2.0), ("/de_layer1/de_layer1.0/ConvTranspose", "ConvTranspose", 3.0)],
        [("/BAM_1/input_conv/Conv", "Conv", 4.0)]]
    assert runs[0][0].kernel == "CPUExecutionProvider" and runs[0][0].sources == ("/BAM_1/input_conv/Conv",)


def test_layers_go_to_the_blocks_of_their_nodes_or_of_the_names_an_engine_gave_them():
    layers = [LayerTime("fused", "Convolution", "brgconv_avx512_I8", 4.0,
                        ("Convert_1", "/BAM_2/BA/mask_conv_1/Conv", "/BAM_2/BA/mask_conv_1/Conv_output_0_Dq")),
              LayerTime("/de_layer2/de_layer2.0/Conv", "Convolution", "jit", 2.0, ("/de_layer2/de_layer2.0/Conv",)),
              # OpenVINO's reorders come from no node: their names carry a layout prefix, then a module path
              LayerTime("/Concat_aBcd16b_acdb_/de_layer2/de_layer2.0/Conv/WithoutBiases", "Reorder", "jit", 1.0),
              LayerTime("Subtract_5_0_acdb_abcd_/BAM_2/BA/mask_conv_1/Conv", "Reorder", "jit", 0.5),
              LayerTime("/BAM_9/BA/Concat_acdb_abcd_/BAM_9/BA/x", "Reorder", "jit", 0.25),  # no such block
              LayerTime("input_QuantizeLinear", "Subgraph", "jit", 0.125, ("input_QuantizeLinear",))]
    assert layer_blocks(layers) == ["BAM_2/BA.mask", "de_layer2", "de_layer2", "BAM_2/BA.mask", UNATTRIBUTED,
                                    UNATTRIBUTED]
    profile = FileProfile("m.onnx", "openvino", (1, 3, 8, 8), 1, [9.0, 11.0], layers)
    assert profile.by("block") == [("BAM_2/BA.mask", 4.5), ("de_layer2", 3.0), (UNATTRIBUTED, 0.375)]
    assert profile.by("op_type") == [("Convolution", 6.0), ("Reorder", 1.75), ("Subgraph", 0.125)]
    summary = profile.to_dict(top=2)
    assert summary["wall_ms_median"] == 10.0 and summary["kernel_ms"] == 7.88 and summary["layers"] == 6
    assert [row["name"] for row in summary["slowest"]] == ["fused", "/de_layer2/de_layer2.0/Conv"]
    assert summary["slowest"][0]["block"] == "BAM_2/BA.mask"
    assert summary["by_block"][0]["share"] == pytest.approx(4.5 / 7.875, abs=1e-4)
    assert summary["by_kernel"][0] == {"name": "Convolution brgconv_avx512_I8", "ms": 4.0, "share": 0.5079}
    with pytest.raises(OptionError, match="block, op_type or kernel"):
        profile.by("provider")


def test_mean_layers_averages_each_layer_over_the_runs():
    runs = [[LayerTime("a", "Conv", "k", 1.0, ("a",)), LayerTime("b", "Add", "k", 3.0)],
            [LayerTime("a", "Conv", "k", 2.0, ("a",)), LayerTime("b", "Add", "k", 5.0)]]
    assert [(layer.name, layer.ms, layer.sources) for layer in mean_layers(runs)] == [("a", 1.5, ("a",)),
                                                                                        ("b", 4.0, ())]
    assert mean_layers([]) == []


def test_bad_options_are_refused_before_any_run(tmp_path):
    with pytest.raises(OptionError, match="backend must be one of"):
        profile_file(tmp_path / "m.onnx", "tensorrt")
    with pytest.raises(OptionError, match="runs must be >= 1"):
        profile_file(tmp_path / "m.onnx", "onnxruntime", runs=0)
    with pytest.raises(OptionError, match="bf16 arithmetic is OpenVINO's"):
        profile_file(tmp_path / "m.onnx", "onnxruntime", bf16=True)


@needs_openvino
def test_a_bf16_profile_runs_bfloat16_kernels_where_the_cpu_has_them(tiny_files):
    from runtime.backends.base import BackendUnavailableError

    try:
        profile = profile_file(tiny_files[0], "openvino", (1, 3, 16, 16), threads=1, runs=1, bf16=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"no bfloat16 here: {exc}")
    assert profile.arithmetic == "bf16" and profile.to_dict()["arithmetic"] == "bf16"
    assert any("bf16" in layer.kernel for layer in profile.layers if layer.op_type == "Convolution")


@pytest.fixture(scope="module")
def tiny_files(tiny_fp32_and_int8):
    return tiny_fp32_and_int8


def _conv_nodes(path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "ConvTranspose")]


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_a_real_profile_puts_every_convolution_in_a_block(tiny_files, backend):
    fp32, int8 = tiny_files
    for path in (fp32, int8):
        profile = profile_file(path, backend, (2, 3, 24, 40), threads=1, runs=2)
        assert len(profile.wall_ms) == 2 and all(ms > 0 for ms in profile.wall_ms)
        assert profile.shape == (2, 3, 24, 40) and profile.kernel_ms > 0
        assert {"en_layer1", "BAM_1/BA", "BAM_1/CPDC", "de_layer1", "de_layer3"} <= set(dict(profile.by("block")))
        convs = [layer for layer in profile.layers if "Conv" in layer.op_type]
        blocks = layer_blocks(profile.layers)
        assert convs and all(block != UNATTRIBUTED for layer, block in zip(profile.layers, blocks, strict=True)
                             if "Conv" in layer.op_type)
        # every block with convolutions in the file has convolution time in the profile; ONNX Runtime names a
        # float Conv fused with its LeakyRelu after the activation ("/BAM_1/act/LeakyRelu_output_0_nchwc"), whose
        # block is the next one (BAM_1/fusion for BAM_1/input_conv)
        conv_blocks = {block for layer, block in zip(profile.layers, blocks, strict=True) if "Conv" in layer.op_type}
        expected = {group_of(node) for node in _conv_nodes(fp32)}
        if backend == "onnxruntime" and path == fp32:
            assert conv_blocks and conv_blocks < expected
        else:
            assert conv_blocks == expected
    ops = {layer.op_type for layer in profile_file(int8, backend, (1, 3, 16, 16), threads=1, runs=1).layers}
    kernels = {layer.kernel for layer in profile_file(int8, backend, (1, 3, 16, 16), threads=1, runs=1).layers}
    if backend == "onnxruntime":
        assert "QLinearConv" in ops  # the ort flavour runs fused int8 convolutions
    else:
        assert any("I8" in kernel or "i8" in kernel for kernel in kernels)  # OpenVINO's int8 kernels


@needs_openvino
def test_openvino_layer_times_need_the_counters(tiny_files):
    from runtime.backends.openvino_backend import OpenVinoBackend

    fp32, _ = tiny_files
    plain = OpenVinoBackend(fp32, threads=1, compile_cache=None)
    plain.run(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(OptionError, match="profile=True"):
        plain.layer_times()
    counted = OpenVinoBackend(fp32, threads=1, compile_cache=None, profile=True)
    assert counted.layer_times() == []  # nothing run yet
    counted.run(np.zeros((1, 3, 16, 16), np.float32))
    layers = counted.layer_times()
    assert layers and all(layer.ms >= 0 for layer in layers) and any(layer.sources for layer in layers)
    counted.close()
    assert counted.layer_times() == []
