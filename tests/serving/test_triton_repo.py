"""The Triton model repository: every config.pbtxt parses and agrees with the ONNX model it serves."""

import json

import onnx
import pytest

from export.onnx_export import ExportOptions, export_onnx
from export.to_triton import main
from export.triton_repo import TritonRepoError, onnx_io, write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient comes with the serve extra")
from google.protobuf import text_format  # noqa: E402


def _parse(path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


@pytest.fixture
def onnx_file(tmp_path, tiny_model):
    path, _ = export_onnx(tiny_model, tmp_path / "m.onnx", ExportOptions(verify_shapes=[(1, 32, 32)]),
                          "0" * 64, "tiny", tiny_model.config)
    return path


def test_repository_configs_match_the_onnx(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    written = write_repository(onnx_file, repo, max_batch=4)
    assert sorted(p.parent.name for p in written) == ["banet", "banet_onnx", "banet_post", "banet_pre"]
    graph = onnx.load(str(onnx_file)).graph
    onnx_cfg = _parse(repo / "banet_onnx" / "config.pbtxt")
    assert onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.max_batch_size == 4
    assert onnx_cfg.HasField("dynamic_batching")
    assert [i.name for i in onnx_cfg.input] == [graph.input[0].name]
    assert [o.name for o in onnx_cfg.output] == [graph.output[0].name]
    assert list(onnx_cfg.input[0].dims) == [3, -1, -1] and list(onnx_cfg.output[0].dims) == [3, -1, -1]
    assert onnx_cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert onnx_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (repo / "banet_onnx" / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()

    ensemble = _parse(repo / "banet" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    assert ensemble.input[0].data_type == model_config_pb2.TYPE_UINT8 and list(ensemble.input[0].dims) == [-1, -1, 3]
    steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
    assert steps == ["banet_pre", "banet_onnx", "banet_post"]
    # Every ensemble wire names a real tensor of the model it feeds.
    for step in ensemble.ensemble_scheduling.step:
        cfg = _parse(repo / step.model_name / "config.pbtxt")
        assert set(step.input_map) <= {t.name for t in cfg.input}
        assert set(step.output_map) <= {t.name for t in cfg.output}
    for role in ("pre", "post"):
        cfg = _parse(repo / f"banet_{role}" / "config.pbtxt")
        assert cfg.backend == "python"
        assert (repo / f"banet_{role}" / "1" / "model.py").exists()
        conventions = json.loads((repo / f"banet_{role}" / "1" / "conventions.json").read_text())
        assert conventions["banet.channel_order"] == "BGR"


def test_onnx_io_reads_static_batch(tmp_path, tiny_model):
    path, _ = export_onnx(tiny_model, tmp_path / "s.onnx", ExportOptions(static_hw=(32, 48), batch=2),
                          "0" * 64, "tiny", tiny_model.config)
    inputs, outputs, batch = onnx_io(onnx.load(str(path)))
    assert batch == 2 and inputs[0].dims == (3, 32, 48) and outputs[0].data_type == "TYPE_FP32"
    write_repository(path, tmp_path / "repo")
    assert _parse(tmp_path / "repo" / "banet_onnx" / "config.pbtxt").max_batch_size == 2


def test_refuses_to_replace_without_force(tmp_path, onnx_file):
    write_repository(onnx_file, tmp_path / "repo")
    with pytest.raises(TritonRepoError, match="--force"):
        write_repository(onnx_file, tmp_path / "repo")
    write_repository(onnx_file, tmp_path / "repo", force=True)


def test_cli(tmp_path, onnx_file, capsys):
    assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), "--gpu"]) == 0
    cfg = _parse(tmp_path / "r" / "banet_onnx" / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--repository", str(tmp_path / "r2")]) == 1
    assert "export it first" in capsys.readouterr().err
