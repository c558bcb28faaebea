"""The python flavour's network model bounds its memory: images over the budget run in overlapping tiles (the
runtime's ``tiling.py``, copied into the repository, with the ``Deblurrer``'s plan), batches in chunks.

No Triton needed: the repository's own model.py files run here under a stand-in for Triton's
``triton_python_backend_utils`` (what they use of it: tensors in and out, responses, errors), the three models
chained as the ensemble chains them. (The real server: tests/serving/test_triton_server.py.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from export.onnx_export import ExportOptions, export_onnx
from export.to_triton import main
from export.triton_repo import TILE_OVERLAP, TILING, TritonRepoError, write_repository

BUDGET_MB = 16  # 16 MiB / 28 bytes x (8 + 16 / 4) channels = 49,932 pixels of the tiny network per forward pass
BUDGET_PIXELS = BUDGET_MB * 2**20 // (28 * (8 + 16 // 4))


class _Tensor:
    def __init__(self, name: str, array) -> None:
        self.name, self.array = name, np.array(array)  # Triton copies tensors into shared memory

    def as_numpy(self) -> np.ndarray:
        return self.array


class _TritonError(Exception):
    def __init__(self, message: str, code=None) -> None:
        super().__init__(message)


class _Response:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.tensors = {t.name: t.array for t in output_tensors or ()}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = _Tensor, _TritonError, _Response
    module.get_input_tensor_by_name = lambda request, name: request[name]
    return module


def _config(path: Path) -> dict:
    """What the models read of their config.pbtxt, as Triton hands it over (JSON): tensor names, parameters."""
    text = path.read_text()
    inputs, outputs = text.split("\noutput [", 1)
    names = re.compile(r'^\s+name: "([^"]+)"', re.MULTILINE)
    params = re.findall(r'key: "(\w+)"\s+value: \{ string_value: "([^"]*)" \}', text)
    return {"input": [{"name": n} for n in names.findall(inputs)], "output": [{"name": n} for n in
                                                                               names.findall(outputs)],
            "parameters": {key: {"string_value": value} for key, value in params}}


@contextlib.contextmanager
def _isolated_imports():
    """Let a model.py import its own copies (banet/, tiling.py) as in a fresh stub, then restore this process's."""
    ours = lambda name: name in ("banet", "tiling") or name.startswith("banet.")  # noqa: E731
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    path = list(sys.path)
    for name in saved:
        del sys.modules[name]
    sys.modules["triton_python_backend_utils"] = _fake_pb_utils()
    try:
        yield
    finally:
        for name in [n for n in sys.modules if ours(n)] + ["triton_python_backend_utils"]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = path


def load_model(folder: Path):
    """The repository's ``folder/1/model.py`` initialised as Triton initialises it."""
    with _isolated_imports():
        spec = importlib.util.spec_from_file_location(f"triton_model_{folder.name}", folder / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize({"model_config": json.dumps(_config(folder / "config.pbtxt")),
                          "model_instance_kind": "CPU"})
    return model


class Ensemble:
    """pre -> network -> post, as the ensemble's config chains them; :attr:`runs` records the network's calls."""

    def __init__(self, repo: Path) -> None:
        self.pre, self.net, self.post = (load_model(repo / f"banet_{role}") for role in ("pre", "ort", "post"))
        self.runs: list[tuple[int, ...]] = []
        session_run = self.net.session.run

        def recording_run(outputs, feeds):
            self.runs.append(next(iter(feeds.values())).shape)
            return session_run(outputs, feeds)

        self.net.session = types.SimpleNamespace(run=recording_run)

    def network(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Network inputs (one request each) -> outputs, in one execute() as the dynamic batcher groups them."""
        responses = self.net.execute([{self.net.input_name: _Tensor(self.net.input_name, b)} for b in batches])
        assert all(r.error is None for r in responses), [str(r.error) for r in responses]
        return [r.tensors[self.net.output_name] for r in responses]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        pre = self.pre.execute([{"image": _Tensor("image", images)}])[0]
        assert pre.error is None, str(pre.error)
        raw = self.network([pre.tensors[self.net.input_name]])[0]
        post = self.post.execute([{self.net.output_name: _Tensor(self.net.output_name, raw),
                                   "original_size": _Tensor("original_size", pre.tensors["original_size"])}])[0]
        assert post.error is None, str(post.error)
        return post.tensors["deblurred"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def photo(height: int, width: int) -> np.ndarray:
    """A smooth uint8 BGR image with edges (so blending and seams show), deterministic."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    image = np.stack([128 + 100 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], axis=-1)
    image[height // 3:height // 2, width // 4:width // 2] = 30
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def onnx_file(one_bam_onnx) -> Path:
    return one_bam_onnx


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, onnx_file) -> Ensemble:
    pytest.importorskip("onnxruntime", reason="the python flavour runs ONNX Runtime")
    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(onnx_file, repo, threads=1, memory_budget_mb=BUDGET_MB)
    return Ensemble(repo)


@pytest.fixture(scope="module")
def deblurrer(onnx_file):
    from runtime import Deblurrer

    with Deblurrer(onnx_file, backend="onnxruntime", threads=1, memory_budget_mb=BUDGET_MB) as deblur:
        yield deblur


def test_the_repository_holds_the_runtimes_tiling_and_its_overlap(ensemble, tmp_path, onnx_file):
    from runtime.deblurrer import Deblurrer

    repo = tmp_path / "repo"
    write_repository(onnx_file, repo)
    assert (repo / "banet_ort" / "1" / "tiling.py").read_bytes() == TILING.read_bytes()  # a copy, not a rewrite
    assert TILE_OVERLAP == inspect.signature(Deblurrer).parameters["tile_overlap"].default
    assert ensemble.net.budget_pixels == BUDGET_PIXELS and ensemble.net.overlap == TILE_OVERLAP


def test_large_images_run_in_tiles_and_batches_in_chunks_within_the_budget(ensemble, deblurrer):
    """The audit: the network ran any accepted image whole (1448x1448: 2.4 GB; 48 MP: ~55 GB). Under the budget,
    no forward pass takes more input pixels than the budget allows, and the result is the Deblurrer's."""
    image = photo(300, 333)  # 99,900 pixels: twice the budget
    ensemble.runs.clear()
    out = ensemble(image[None])
    assert len(ensemble.runs) > 1, f"ran whole: {ensemble.runs}"
    assert max(n * h * w for n, _, h, w in ensemble.runs) <= BUDGET_PIXELS, ensemble.runs
    expected = deblurrer(image)
    assert deblurrer.tile_for(300, 334) is not None  # the Deblurrer tiles it too (padded to the size multiple)
    assert out.shape == (1, 300, 333, 3)
    np.testing.assert_array_equal(out[0], expected)  # the same plan, blending and session options: the same image
    assert psnr(out[0], image) < 40, "the network changed nothing: the comparison would prove little"

    # A same-sized batch that fits one tile's budget only in parts runs in chunks (as the Deblurrer's forward).
    ensemble.runs.clear()
    batch = np.stack([photo(128, 160), photo(128, 160)[::-1].copy(), photo(128, 160)[:, ::-1].copy()])
    outs = ensemble(batch)
    assert [n for n, *_ in ensemble.runs] == [2, 1], ensemble.runs  # 20,480 pixels an image, 49,932 allowed
    for image, out in zip(batch, outs):
        np.testing.assert_array_equal(out, deblurrer(image))


def test_the_tile_plan_is_the_deblurrers(ensemble, deblurrer):
    sizes = [(32, 32), (222, 224), (224, 224), (300, 334), (128, 1024), (1024, 130), (600, 800), (1000, 1000),
             (4000, 6000), (6000, 8000), (4096, 2), (9000, 64)]
    for height, width in sizes:
        assert ensemble.net.tile_for(height, width) == deblurrer.tile_for(height, width), (height, width)


def test_small_images_and_batches_run_whole_as_before(ensemble):
    """An image (or same-sized batch) within the budget: one ONNX Runtime run, the same numbers as before."""
    ensemble.runs.clear()
    small = [np.random.default_rng(i).random((n, 3, 64, 96), dtype=np.float32) for i, n in ((0, 1), (1, 2))]
    odd = np.random.default_rng(2).random((1, 3, 48, 40), dtype=np.float32)
    outs = ensemble.network([*small, odd])
    assert sorted(ensemble.runs) == [(1, 3, 48, 40), (3, 3, 64, 96)], ensemble.runs  # grouped by size, whole
    session = ensemble.net.session
    ensemble.runs.clear()
    whole = session.run(None, {ensemble.net.input_name: np.concatenate(small)})[0]
    np.testing.assert_array_equal(np.concatenate(outs[:2]), whole)
    np.testing.assert_array_equal(outs[2], session.run(None, {ensemble.net.input_name: odd})[0])


def test_the_budget_is_an_option_and_0_runs_whole(tmp_path, onnx_file, capsys):
    repo = tmp_path / "r"
    assert main(["--onnx", str(onnx_file), "--repository", str(repo), "--memory-budget-mb", "0"]) == 0
    assert load_model(repo / "banet_ort").tile_for(6000, 8000) is None
    readme = (repo / "README_banet.md").read_text()
    assert "whole" in readme and "--memory-budget-mb 0" in readme
    assert main(["--onnx", str(onnx_file), "--repository", str(repo), "--force"]) == 0
    assert load_model(repo / "banet_ort").tile_for(6000, 8000) is not None  # the default budget: 768 MiB
    readme = (repo / "README_banet.md").read_text()
    assert "768 MiB" in readme and "overlapping tiles" in readme and "not restarted" in readme
    for bad in ("-1", "5", "nan", "1e300"):
        assert main(["--onnx", str(onnx_file), "--repository", str(tmp_path / "bad"), "--memory-budget-mb",
                     bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: memory-budget-mb must be") and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(TritonRepoError, match="memory-budget-mb"):
        write_repository(onnx_file, tmp_path / "bad", memory_budget_mb=True)


def test_a_config_without_the_plan_is_refused_in_one_line(tmp_path, onnx_file):
    repo = tmp_path / "repo"
    write_repository(onnx_file, repo)
    config = repo / "banet_ort" / "config.pbtxt"
    config.write_text(re.sub(r'parameters \{\n  key: "budget_pixels"[^}]*\}\n\}', "", config.read_text()))
    with pytest.raises(RuntimeError, match="budget_pixels"):
        load_model(repo / "banet_ort")


def test_a_static_shape_export_runs_as_sent(tmp_path):
    """A static export takes its one shape (and batch): no tiles, no chunks, whatever the budget."""
    torch = pytest.importorskip("torch", reason="exporting the test network needs PyTorch")
    from banet.config import BANetConfig
    from banet.model import BANet

    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval()
    path, _ = export_onnx(model, tmp_path / "s.onnx", ExportOptions(static_hw=(32, 48), batch=2), "0" * 64, "tiny",
                          model.config)
    write_repository(path, tmp_path / "repo", memory_budget_mb=BUDGET_MB)
    net = load_model(tmp_path / "repo" / "banet_ort")
    assert (net.budget_pixels, net.fixed_batch) == (0, 2) and net.tile_for(32, 48) is None
    batch = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    np.testing.assert_array_equal(net.deblur(batch), net.session.run(None, {net.input_name: batch})[0])
    assert "static shape" in (tmp_path / "repo" / "README_banet.md").read_text()
