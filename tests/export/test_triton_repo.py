"""The Triton model repository: every config.pbtxt parses and agrees with the ONNX model it serves; the Python
models are self-contained; engines are checked through their manifests. (A real server: test_triton_server.py.)"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import export.triton_repo as triton_repo
from banet.manifest import manifest_path
from export.onnx_export import ExportOptions, export_onnx
from export.to_triton import main
from export.triton_repo import BANET_PACKAGE, TritonRepoError, core_files, onnx_io, write_repository
from tests.manifest_helpers import make_manifest

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
                          "ab" * 32, "tiny", tiny_model.config)  # the weights make_manifest's engines are built from
    return path


def _engine(tmp_path, **changes):
    engine = tmp_path / "tiny_fp16.engine"
    engine.write_bytes(b"engine")
    make_manifest(**changes).write(manifest_path(engine))
    return engine


def test_repository_configs_match_the_onnx(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    written = write_repository(onnx_file, repo, max_batch=4, flavour="onnxruntime")
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
    assert _parse(tmp_path / "repo" / "banet_ort" / "config.pbtxt").max_batch_size == 2


def test_refuses_to_replace_without_force(tmp_path, onnx_file):
    write_repository(onnx_file, tmp_path / "repo")
    with pytest.raises(TritonRepoError, match="--force"):
        write_repository(onnx_file, tmp_path / "repo")
    write_repository(onnx_file, tmp_path / "repo", force=True)


def test_cli(tmp_path, onnx_file, capsys):
    assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), "--gpu",
                 "--flavour", "onnxruntime"]) == 0
    cfg = _parse(tmp_path / "r" / "banet_onnx" / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--repository", str(tmp_path / "r2")]) == 1
    assert "export it first" in capsys.readouterr().err


def test_python_flavour_is_the_default_and_self_contained(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    written = write_repository(onnx_file, repo, max_batch=4, threads=2, dynamic_batching=False)
    assert sorted(p.parent.name for p in written) == ["banet", "banet_ort", "banet_post", "banet_pre"]
    net = _parse(repo / "banet_ort" / "config.pbtxt")
    assert net.backend == "python" and net.parameters["intra_op_threads"].string_value == "2"
    assert not net.HasField("dynamic_batching")
    assert (repo / "banet_ort" / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert "onnxruntime" in (repo / "banet_ort" / "1" / "model.py").read_text()
    steps = [s.model_name for s in _parse(repo / "banet" / "config.pbtxt").ensemble_scheduling.step]
    assert steps == ["banet_pre", "banet_ort", "banet_post"]
    assert "python -m serving.triton_server" in (repo / "README_banet.md").read_text()
    for role in ("pre", "post"):
        version = repo / f"banet_{role}" / "1"
        for name in ("conventions", "processing"):  # copies of the one implementation, not a second one
            assert (version / "banet" / f"{name}.py").read_bytes() == (BANET_PACKAGE / f"{name}.py").read_bytes()
    # The copy imports with numpy alone: no site-packages .pth (so no installed banet-deploy), only numpy's folder.
    numpy_dir = str(Path(np.__file__).parent.parent)
    version = repo / "banet_pre" / "1"
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import banet.processing as p, numpy as np; "
            "b, pad = p.preprocess(np.zeros((5, 7, 3), np.uint8)); print(p.__file__, b.shape)")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(version), numpy_dir], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith(str(version / "banet" / "processing.py")) and "(1, 3, 6, 8)" in out


def test_a_core_module_that_needs_more_than_numpy_is_refused(tmp_path, monkeypatch):
    assert set(core_files()) == {"conventions", "processing"}
    (tmp_path / "conventions.py").write_text("import numpy\n")
    (tmp_path / "helper.py").write_text("import torch\n")
    (tmp_path / "processing.py").write_text("from banet.conventions import X\nfrom banet.helper import Y\n")
    monkeypatch.setattr(triton_repo, "BANET_PACKAGE", tmp_path)
    with pytest.raises(TritonRepoError, match="helper.py imports torch"):
        core_files()


def test_tensorrt_engine_records_version_and_gpu(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    written = write_repository(onnx_file, repo, max_batch=8, engine=_engine(tmp_path))
    assert sorted(p.parent.name for p in written) == ["banet", "banet_post", "banet_pre", "banet_trt"]
    text = (repo / "banet_trt" / "config.pbtxt").read_text()
    assert "# engine built with TensorRT 10.8.0.43 (fp16) on NVIDIA GeForce RTX 3090 (compute capability 8.6)" in text
    trt = _parse(repo / "banet_trt" / "config.pbtxt")
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 2  # the profile's max batch
    assert trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (repo / "banet_trt" / "1" / "model.plan").read_bytes() == b"engine"
    assert "TensorRT 10.8.0.43" in (repo / "README_banet.md").read_text()
    steps = [s.model_name for s in _parse(repo / "banet" / "config.pbtxt").ensemble_scheduling.step]
    assert steps == ["banet_pre", "banet_trt", "banet_post"]


def test_rtx_engine_is_refused_with_one_line(tmp_path, onnx_file, capsys):
    engine = _engine(tmp_path, runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None, targets=["sm75"])
    assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), "--engine", str(engine)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "TensorRT for RTX 1.7.1.116" in err and "cannot load" in err
    assert "--runtime tensorrt" in err and "--flavour python" in err
    assert not (tmp_path / "r").exists()


def test_engine_and_flavour_must_agree(tmp_path, onnx_file, capsys):
    engine = _engine(tmp_path)
    for argv, message in ((["--engine", str(engine), "--flavour", "python"], "only used by the tensorrt flavour"),
                          (["--flavour", "tensorrt"], "needs --engine")):
        assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), *argv]) == 1
        assert message in capsys.readouterr().err


def test_a_folder_given_as_the_engine_is_named_as_one(tmp_path, onnx_file, capsys):
    (tmp_path / "engines").mkdir()
    for engine, message in ((tmp_path / "engines", "is a directory, not engine file"),  # before: "not found"
                            (tmp_path / "missing.engine", "missing.engine: engine file not found")):
        assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), "--engine", str(engine)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_force_replaces_another_flavour(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    write_repository(onnx_file, repo, flavour="onnxruntime")
    (repo / "theirs").mkdir()
    with pytest.raises(TritonRepoError, match="banet_onnx"):
        write_repository(onnx_file, repo, flavour="python")
    write_repository(onnx_file, repo, flavour="python", force=True)
    assert not (repo / "banet_onnx").exists() and (repo / "banet_ort").is_dir() and (repo / "theirs").is_dir()


@pytest.mark.parametrize("changes, message", [
    ({"banet.source_sha256": "cd" * 32}, "was built from other weights than"),
    ({"banet.shape_mode": "static", "banet.static_shape": "[1, 64, 64]"}, "was built from a static export"),
])
def test_an_engine_of_another_network_is_refused(tmp_path, onnx_file, capsys, changes, message):
    """Before: the configs, conventions and README came from --onnx and the plan from --engine, whatever network
    each was: another model's engine was served under this ONNX's description, a static engine under dynamic dims
    (Triton then refuses to load it, on the GPU server)."""
    from tests.manifest_helpers import make_manifest

    metadata = {**make_manifest().metadata, **changes}
    engine = _engine(tmp_path, metadata=metadata)
    assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "r"), "--engine", str(engine)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and message in err and "tiny.onnx" in err, err
    assert not (tmp_path / "r").exists()


def test_a_gpu_repository_says_to_give_the_container_the_gpus(tmp_path, onnx_file):
    """Round 17: ``--flavour onnxruntime --gpu`` (KIND_GPU) wrote a docker command without ``--gpus all``: Triton in
    that container cannot place its instances."""
    triton_repo.write_repository(onnx_file, tmp_path / "gpu", flavour="onnxruntime", gpu=True)
    assert "--gpus all" in next((tmp_path / "gpu").glob("README*.md")).read_text()
    triton_repo.write_repository(onnx_file, tmp_path / "cpu", flavour="onnxruntime")
    assert "--gpus all" not in next((tmp_path / "cpu").glob("README*.md")).read_text()
