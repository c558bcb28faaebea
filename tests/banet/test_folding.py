"""The folded attention (banet.folding) computes the trained network's function with fewer operations, leaves the
trained model untouched, and exports record their form so the graph check counts the right convolutions."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from banet.config import BANetConfig  # noqa: E402
from banet.errors import ArtifactError  # noqa: E402
from banet.folding import FoldedAttention, fold_attention, is_folded  # noqa: E402
from banet.metadata import ModelMetadata, expected_conv_nodes, read_onnx_metadata  # noqa: E402
from banet.model import BANet, BlurAwareAttention  # noqa: E402

CONFIGS = [BANetConfig(num_bams=2, dim_1=8, dim_2=16), BANetConfig(num_bams=1, dim_1=8, dim_2=16, ba_fuse_full=True)]


def _trained(config: BANetConfig) -> BANet:
    torch.manual_seed(0)
    model = BANet(config).eval()
    with torch.no_grad():  # trained-looking attention: random init leaves it nearly constant
        for parameter in model.parameters():
            parameter.mul_(3)
    return model


@pytest.mark.parametrize("config", CONFIGS, ids=["stack-2", "plus-fuse-full"])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 38, 50), (1, 3, 130, 250), (1, 3, 250, 64)])
def test_folded_network_computes_the_trained_function(config, shape):
    model = _trained(config)
    folded = fold_attention(model)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        expected, got = model(x), folded(x)
    scale = float(expected.abs().max())
    assert scale > 0.1  # a visible residual: a wrong fold shows
    # float32 rounding only, relative to the output's scale (up to ~30 with these weights): 1e-6 of it measured on
    # an Intel Xeon (AMX), where a fixed 2e-5 failed; a wrong fold is off by 1e-3 of it or more
    error = float((got - expected).abs().max())
    assert error <= 4e-6 * scale, f"max error {error:.3g} on outputs up to {scale:.3g}"


def test_folding_copies_and_leaves_the_trained_model_as_it_was():
    model = _trained(CONFIGS[0])
    state = copy.deepcopy(model.state_dict())
    folded = fold_attention(model)
    assert not is_folded(model) and is_folded(folded)
    assert isinstance(model.BAM_1.BA, BlurAwareAttention) and isinstance(folded.BAM_1.BA, FoldedAttention)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(name.endswith("fuse_conv.weight") and ".BA." in name for name in folded.state_dict())
    assert is_folded(fold_attention(folded))  # folding twice is harmless


def test_metadata_records_the_attention_form_and_refuses_an_unknown_one():
    from banet.conventions import BANET

    metadata = ModelMetadata(conventions=BANET, config=CONFIGS[0], precision="fp32", source_sha256="0" * 64,
                             source_name="x", exporter="t", opset=17, attention="folded")
    props = metadata.to_props()
    assert ModelMetadata.from_props(props).attention == "folded"
    older = {k: v for k, v in props.items() if k != "banet.attention"}
    assert ModelMetadata.from_props(older).attention == "trained"  # files written before the key existed
    with pytest.raises(ArtifactError, match="banet.attention"):
        ModelMetadata.from_props({**props, "banet.attention": "squashed"})
    assert expected_conv_nodes(CONFIGS[0], "folded") == expected_conv_nodes(CONFIGS[0]) - CONFIGS[0].num_bams


def _export(tmp_path, fold: bool):
    from export.onnx_export import ExportOptions, export_onnx

    model = _trained(CONFIGS[0])
    path, report = export_onnx(model, tmp_path / f"fold_{fold}.onnx",
                               ExportOptions(verify_shapes=[(1, 32, 48), (2, 38, 50)], fold_attention=fold),
                               "0" * 64, "tiny", model.config)
    return path, report


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "trained"])
def test_exports_record_their_form_and_match_the_trained_model(tmp_path, fold):
    import onnx

    path, report = _export(tmp_path, fold)
    assert report.passed and report.worst_psnr_db > 100
    metadata = read_onnx_metadata(path)  # the convolution count of the recorded form
    assert metadata.attention == ("folded" if fold else "trained")
    convs = sum(node.op_type in ("Conv", "ConvTranspose") for node in onnx.load(str(path)).graph.node)
    assert convs == expected_conv_nodes(CONFIGS[0], metadata.attention) + 1


def test_a_graph_whose_recorded_form_is_not_its_own_is_refused(tmp_path):
    import onnx

    path, _ = _export(tmp_path, True)
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == "banet.attention":
            entry.value = "trained"
    onnx.save(proto, str(tmp_path / "mislabelled.onnx"))
    with pytest.raises(ArtifactError, match="convolutions where"):
        read_onnx_metadata(tmp_path / "mislabelled.onnx")


def test_int8_blocks_of_a_folded_graph_are_the_trained_graphs(tmp_path):
    import onnx

    from calibration.int8 import node_groups

    groups = {}
    for fold in (True, False):
        path, _ = _export(tmp_path, fold)
        names = [node.name for node in onnx.load(str(path)).graph.node if node.op_type in ("Conv", "MatMul")]
        groups[fold] = set(node_groups(names))
    assert groups[True] == groups[False]
    assert {"BAM_1/BA", "BAM_1/BA.mask", "BAM_2/BA"} <= groups[True]


def test_folded_export_runs_on_the_runtime_like_the_checkpoint(tmp_path):
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    path, _ = _export(tmp_path, True)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (1, 3, 40, 56)).astype(np.float32)
    with torch.no_grad():
        expected = _trained(CONFIGS[0])(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OnnxRuntimeBackend(path, threads=1).run(x), expected, atol=1e-4, rtol=0)
