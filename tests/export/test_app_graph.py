"""App graphs (export/to_app.py): uint8 images in and out, the runtime's pixels, ORT Mobile files, refusals."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from banet.conventions import BANET
from banet.errors import ArtifactError
from banet.metadata import ModelMetadata, read_onnx_metadata
from banet.processing import postprocess, preprocess
from export import app_graph
from export.app_check import MIN_IDENTICAL, check_app_graphs, judge_shape, onnxruntime_app_run
from export.app_graph import wrap_for_apps
from export.onnx_export import ExportOptions, export_onnx
from export.runtime_forwards import onnxruntime_forward
from export.to_app import main
from tests.conftest import TINY

SHAPES = [(1, 5, 3), (1, 37, 53), (2, 20, 31), (1, 8, 8), (1, 1, 1), (1, 7, 300)]


def _metadata(**kw) -> ModelMetadata:
    return ModelMetadata(conventions=kw.pop("conventions", BANET), config=TINY, precision="fp32",
                         source_sha256="0" * 64, source_name="synthetic", exporter="test", opset=17, min_size=8, **kw)


def _network(body: str) -> onnx.ModelProto:
    """A stand-in network NCHW float -> NCHW float: 'identity', 'blur' (3x3 average, so the padding shows at the
    bottom/right edges), or 'nan' (a square root of negative values)."""
    nodes = {"identity": [helper.make_node("Identity", ["input"], ["output"])],
             "blur": [helper.make_node("AveragePool", ["input"], ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
             "nan": [helper.make_node("Sqrt", ["input"], ["output"])]}[body]
    graph = helper.make_graph(nodes, body, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                          ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                             ["batch", 3, "height", "width"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _images(shape, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, channels), dtype=np.uint8)


def _runtime_path(network: onnx.ModelProto, images: np.ndarray, order: str, metadata: ModelMetadata) -> np.ndarray:
    """What the runtime does: banet.processing around the network file."""
    batch, padding = preprocess(images, metadata.conventions, order, min_size=(metadata.min_size,) * 2)
    raw = _session(network).run(None, {"input": batch})[0]
    return postprocess(raw, padding, np.uint8, metadata.conventions, order)


def test_identity_network_gives_the_input_back_exactly():
    app = _session(wrap_for_apps(_network("identity"), _metadata()))
    for shape in SHAPES:
        images = _images(shape)
        deblurred, finite = app.run(None, {"image": images})
        assert deblurred.dtype == np.uint8 and np.array_equal(deblurred, images), shape
        assert finite.dtype == bool and finite.shape == (shape[0],) and finite.all()


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_padding_and_channel_order_equal_the_runtime_path(order):
    """A 3x3 blur sees the padded rows/columns at the bottom/right: reflect where it fits, edge below the smallest
    size (5x3 -> 8x8), as banet.processing.pad_to; channel order swapped in and out."""
    network, metadata = _network("blur"), _metadata()
    app = _session(wrap_for_apps(network, metadata, order))
    for shape in SHAPES:
        images = _images(shape, seed=sum(shape))
        deblurred, _ = app.run(None, {"image": images})
        np.testing.assert_array_equal(deblurred, _runtime_path(network, images, order, metadata), err_msg=str(shape))
    rgb = _images((1, 9, 11))
    swapped, _ = _session(wrap_for_apps(network, metadata, "BGR")).run(None, {"image": rgb[..., ::-1].copy()})
    straight, _ = _session(wrap_for_apps(network, metadata, "RGB")).run(None, {"image": rgb})
    np.testing.assert_array_equal(swapped[..., ::-1], straight)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_alpha_channel_is_ignored(order):
    app = _session(wrap_for_apps(_network("blur"), _metadata(), order))
    rgba = _images((2, 13, 17), channels=4)
    with_alpha, _ = app.run(None, {"image": rgba})
    without, _ = app.run(None, {"image": rgba[..., :3].copy()})
    np.testing.assert_array_equal(with_alpha, without)


def test_edge_padding_conventions_use_edge_everywhere():
    conventions = type(BANET)(pad_mode="edge")
    network, metadata = _network("blur"), _metadata(conventions=conventions)
    images = _images((1, 37, 53))
    deblurred, _ = _session(wrap_for_apps(network, metadata)).run(None, {"image": images})
    np.testing.assert_array_equal(deblurred, _runtime_path(network, images, "RGB", metadata))


@pytest.mark.parametrize("tile", [None, 8])
def test_overflow_is_flagged_per_image(tile):
    app = _session(wrap_for_apps(_network("nan"), _metadata(), tile=tile, overlap=2))
    images = np.stack([_images((1, 10, 10))[0], np.full((10, 10, 3), 255, np.uint8)])
    _, finite = app.run(None, {"image": images})
    assert finite.tolist() == [False, True]  # sqrt(pixel/255 - 0.5): negative (NaN) unless every pixel is 255


def test_bad_requests_refused():
    with pytest.raises(ValueError, match="channel order"):
        wrap_for_apps(_network("identity"), _metadata(), "RGBX")
    old = _network("identity")
    old.opset_import[0].version = 11
    with pytest.raises(ValueError, match="opset 11"):
        wrap_for_apps(old, _metadata())


def test_judge_passes_rare_one_level_flips_and_fails_systematic_ones():
    rng = np.random.default_rng(0)
    runtime = rng.integers(1, 255, (1, 100, 100, 3), dtype=np.uint8)
    flipped = runtime.copy()
    flipped.reshape(-1)[:10] += 1  # 10 of 30,000 values one level off (another kernel's rounding)
    ok = judge_shape((1, 100, 100), flipped, np.array([True]), runtime, runtime, 70.0)
    assert ok.passed and ok.max_level_difference == 1 and ok.identical >= MIN_IDENTICAL
    floored = runtime.copy()
    floored[rng.random(runtime.shape) < 0.5] -= 1  # rounding down instead of to nearest: half the values
    bad = judge_shape((1, 100, 100), floored, np.array([True]), runtime, runtime, 30.0)
    assert not bad.passed and "differ from the runtime path" in bad.error
    shifted = np.clip(runtime.astype(int) + 3, 0, 255).astype(np.uint8)
    assert not judge_shape((1, 100, 100), shifted, np.array([True]), runtime, runtime, 30.0).passed
    assert not judge_shape((1, 100, 100), runtime, np.array([False]), runtime, runtime, 30.0).passed
    drifted = judge_shape((1, 100, 100), runtime, np.array([True]), runtime, shifted, 70.0)
    assert not drifted.passed and "from PyTorch FP32" in drifted.error


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    from banet.model import BANet

    torch.manual_seed(0)
    model = BANet(TINY).eval()
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)
    path = tmp_path_factory.mktemp("app") / "tiny.onnx"
    export_onnx(model, path, ExportOptions(verify_shapes=[(1, 16, 16)]), "0" * 64, "tiny", TINY)
    return model, path


@pytest.fixture(scope="module")
def tiled_app(tmp_path_factory, tiny_onnx):
    """The tiny network's app graph in tiles of at most 32 (overlap 8), as .onnx and .ort."""
    _, network = tiny_onnx
    folder = tmp_path_factory.mktemp("tiled")
    onnx.save(wrap_for_apps(onnx.load(str(network)), read_onnx_metadata(network), tile=32, overlap=8),
              str(folder / "tiled.onnx"))
    app_graph.save_ort_format(folder / "tiled.onnx", folder / "tiled.ort")
    return folder / "tiled.onnx", folder / "tiled.ort"


def test_real_network_app_graph_and_ort_file_give_the_runtime_pixels(tmp_path, tiny_onnx):
    from export.onnx_export import torch_forward

    model, network = tiny_onnx
    metadata = read_onnx_metadata(network)
    app = tmp_path / "tiny_app.onnx"
    onnx.save(wrap_for_apps(onnx.load(str(network)), metadata), str(app))
    app_graph.save_ort_format(app, tmp_path / "tiny_app.ort", tmp_path / "ops.config")
    assert "Conv" in (tmp_path / "ops.config").read_text()
    runs = {"onnx": onnxruntime_app_run(app), "ort": onnxruntime_app_run(tmp_path / "tiny_app.ort")}
    shapes = [(1, 5, 3), (1, 37, 53), (2, 20, 30)]
    reports = check_app_graphs(runs, onnxruntime_forward(network), torch_forward(model), metadata, "RGB", shapes)
    for report in reports:
        assert report.passed, report.table()
        assert all(r.max_level_difference <= 1 and r.psnr_db >= 70 for r in report.results)
    # the check can fail: a wrong offset inside the graph moves every pixel
    broken = wrap_for_apps(onnx.load(str(network)), metadata)
    offset = next(t for t in broken.graph.initializer if t.name == "app/offset_in")
    offset.CopyFrom(numpy_helper.from_array(np.array(-0.4, np.float32), offset.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(broken, str(bad))
    [failed] = check_app_graphs({"bad": onnxruntime_app_run(bad)}, onnxruntime_forward(network),
                                torch_forward(model), metadata, "RGB", shapes[:1])
    assert not failed.passed and "differ from the runtime path" in failed.results[0].error


def test_cli_writes_checked_files_and_refuses_to_overwrite(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setattr("export.to_app.APP_SWEEP", ((1, 5, 3), (2, 20, 30)))
    out = tmp_path / "a" / "tiny_app.onnx"
    report = tmp_path / "r.json"
    assert main(["--weights", str(tiny_weights), "--output", str(out), "--report", str(report), "-q"]) == 0
    said = capsys.readouterr().out
    assert "wrote tiny_app.onnx" in said and "tiny_app.ort" in said and "PyTorch FP32" in said
    assert out.is_file() and out.with_suffix(".ort").is_file()
    assert (out.parent / "tiny_app.required_operators.config").read_text().count("tiny_app.ort") == 1
    record = json.loads(report.read_text())
    assert [r["passed"] for r in record["checks"]] == [True, True] and record["files"]["tiny_app.onnx"]["bytes"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny_app.onnx", "tiny_app.ort",
                                                           "tiny_app.required_operators.config"]
    before = out.read_bytes()
    assert main(["--weights", str(tiny_weights), "--output", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == before
    # the runtime refuses both files in one line, naming what they are
    with pytest.raises(ArtifactError, match="an app graph"):
        read_onnx_metadata(out)
    from runtime import Deblurrer

    with pytest.raises(ValueError, match="ORT Mobile app graph"):
        Deblurrer(out.with_suffix(".ort"))
    # an app graph given as the network to wrap
    assert main(["--weights", str(tiny_weights), "--onnx", str(out), "--output", str(tmp_path / "x.onnx")]) == 1
    assert "an app graph" in capsys.readouterr().err


def test_cli_failed_check_leaves_failed_files_and_writes_nothing(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setattr("export.to_app.APP_SWEEP", ((1, 6, 10),))
    monkeypatch.setattr(app_graph, "_channel_indices", lambda source, target: None)  # RGB fed as BGR
    out = tmp_path / "tiny_app.onnx"
    report = tmp_path / "r.json"
    assert main(["--weights", str(tiny_weights), "--output", str(out), "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert "failed its check on tiny_app.onnx, tiny_app.ort" in err and "FAIL" in err
    record = json.loads(report.read_text())  # the evidence is kept where asked: what failed, no files
    assert record["passed"] is False and record["files"] == {} and not record["checks"][0]["passed"]
    report.unlink()
    assert sorted(p.name for p in tmp_path.iterdir() if "app" in p.name) == ["tiny_app.failed.onnx",
                                                                            "tiny_app.failed.ort"]


def test_cli_refusals_before_work(tmp_path, tiny_weights, capsys):
    assert main(["--weights", str(tiny_weights), "--precision", "int8"]) == 1
    assert "make it with python -m calibration.quantize --weights" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "nope.pth")]) == 1
    assert "nope.pth: checkpoint (--weights) not found" in capsys.readouterr().err
    assert main(["--weights", str(tiny_weights), "--output", str(tmp_path / "x.ort")]) == 1
    assert "written as .onnx" in capsys.readouterr().err
    assert main(["--onnx", str(tmp_path / "n.onnx"), "--precision", "fp16"]) == 2


def test_cli_refuses_an_onnx_of_other_weights(tmp_path, tiny_weights, tiny_onnx, capsys):
    _, network = tiny_onnx  # exported with a recorded sha256 of zeros: not tiny_weights'
    assert main(["--weights", str(tiny_weights), "--onnx", str(network), "--output", str(tmp_path / "a.onnx")]) == 1
    assert "exported from other weights" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()


def test_cli_refuses_weights_that_are_not_a_checkpoint_in_one_line(tmp_path, tiny_onnx, capsys):
    _, network = tiny_onnx
    (tmp_path / "rand.pth").write_bytes(np.random.default_rng(2).integers(0, 256, 3000, np.uint8).tobytes())
    for weights in (tmp_path / "rand.pth", network):  # foreign bytes; an ONNX file given as --weights
        assert main(["--weights", str(weights), "--output", str(tmp_path / "a.onnx"), "-q"]) == 1
        err = capsys.readouterr().err
        # before: a traceback ending in banet.errors.CheckpointFormatError
        assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a.onnx").exists()


def test_script_help_runs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "export" / "to_app.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "ORT Mobile" in done.stdout


def test_app_graph_equals_deblurrer_on_the_network_file(tmp_path, tiny_onnx):
    """The reference the check uses is what an app user of the Python runtime gets: Deblurrer on ONNX Runtime."""
    from runtime import Deblurrer

    _, network = tiny_onnx
    app = tmp_path / "tiny_app.onnx"
    onnx.save(wrap_for_apps(onnx.load(str(network)), read_onnx_metadata(network)), str(app))
    session = _session(onnx.load(str(app)))
    deblurrer = Deblurrer(network, backend="onnxruntime", rgb=True)
    for shape in [(41, 67), (6, 5), (120, 90)]:
        rgb = _images((1, *shape), seed=shape[0])[0]
        deblurred, finite = session.run(None, {"image": rgb[None]})
        np.testing.assert_array_equal(deblurred[0], deblurrer.deblur(rgb), err_msg=str(shape))
        assert finite.all()


@pytest.mark.parametrize("tile, overlap", [(16, 4), (24, 8)])
def test_tiled_graph_blends_tiles_as_the_runtime_does(tile, overlap):
    """Evenly sized tiles of at most ``tile`` (runtime.tiling.even_tile), blended by runtime.tiling.run_tiled's
    ramps: a 3x3 blur differs at every tile seam unless the blending matches."""
    from export.app_check import tiled

    network, metadata = _network("blur"), _metadata()
    app = _session(wrap_for_apps(network, metadata, tile=tile, overlap=overlap))
    forward = tiled(lambda x: _session(network).run(None, {"input": x})[0], tile, overlap, 2)
    for shape in [(1, 37, 53), (2, 40, 30), (1, 100, 17), (1, 16, 16), (1, 5, 3)]:
        images = _images(shape, seed=shape[1])
        batch, padding = preprocess(images, BANET, "RGB", min_size=(8, 8))
        expected = postprocess(forward(batch), padding, np.uint8, BANET, "RGB")
        deblurred, finite = app.run(None, {"image": images})
        np.testing.assert_array_equal(deblurred, expected, err_msg=str(shape))
        assert finite.all()


def test_tiled_graph_runs_an_image_within_one_tile_whole():
    network, metadata = _network("blur"), _metadata()
    whole, tiled_app = (_session(wrap_for_apps(network, metadata)),
                        _session(wrap_for_apps(network, metadata, tile=64, overlap=8)))
    images = _images((2, 64, 50))
    np.testing.assert_array_equal(tiled_app.run(None, {"image": images})[0], whole.run(None, {"image": images})[0])
    bigger = _images((1, 65, 50))  # one row more: two tiles, the seam blended
    assert not np.array_equal(tiled_app.run(None, {"image": bigger})[0], whole.run(None, {"image": bigger})[0])


def test_tiled_real_network_and_its_ort_file_pass_the_check(tiny_onnx, tiled_app):
    from export.onnx_export import torch_forward

    model, network = tiny_onnx
    metadata = read_onnx_metadata(network)
    runs = {"onnx": onnxruntime_app_run(tiled_app[0]), "ort": onnxruntime_app_run(tiled_app[1])}
    shapes = [(1, 70, 90), (2, 33, 41)]
    for report in check_app_graphs(runs, onnxruntime_forward(network), torch_forward(model), metadata, "RGB", shapes,
                                   tile=32, overlap=8):
        assert report.passed, report.table()
    # held to the tiles it claims: checked as an untiled graph, it fails
    [untiled] = check_app_graphs({"onnx": runs["onnx"]}, onnxruntime_forward(network), torch_forward(model), metadata,
                                 "RGB", shapes[:1])
    assert not untiled.passed


def test_cli_refuses_a_bad_tile(tiny_weights, capsys):
    for option in (["--tile", "15"], ["--tile", "64", "--overlap", "32"], ["--overlap", "0"], ["--tile", "-2"]):
        assert main(["--weights", str(tiny_weights), *option]) == 2, option
        assert "the tile is 0 (whole images) or even" in capsys.readouterr().err
    with pytest.raises(ValueError, match="more than twice the overlap"):
        wrap_for_apps(_network("blur"), _metadata(), tile=16, overlap=8)


def test_onnxruntime_web_runs_the_app_graph_as_a_browser_would(tmp_path, tiny_onnx, tiled_app):
    """onnxruntime-web (WebAssembly, under Node.js: apps/web/deblur.mjs) on a tiled graph and its .ort: the same
    image as native ONNX Runtime, within the drift floor and, for FP32, nearly every pixel equal."""
    from export.app_web import web_app_run, web_problem
    from export.onnx_export import torch_forward

    problem = web_problem()
    if problem:
        pytest.skip(problem)
    model, network = tiny_onnx
    metadata = read_onnx_metadata(network)
    runs = {"web onnx": web_app_run(tiled_app[0]), "web ort": web_app_run(tiled_app[1])}
    for report in check_app_graphs(runs, onnxruntime_forward(network), torch_forward(model), metadata, "RGB",
                                   [(1, 5, 3), (2, 70, 90)], tile=32, overlap=8, drift_only=tuple(runs)):
        assert report.passed and not report.hold_pixels, report.table()
        assert all(r.identical >= 0.999 and r.psnr_db >= 70 for r in report.results), report.table()
    with pytest.raises(RuntimeError, match="onnxruntime-web failed"):
        web_app_run(tmp_path / "missing.onnx")(_images((1, 8, 8)))


def test_chromium_runs_the_app_graph_through_the_page(tmp_path, tiny_onnx, tiled_app):
    """A real browser: headless Chromium opens apps/web's page, whose own code (page.mjs) runs the tiled graph and its
    .ort on onnxruntime-web, cross-origin isolated (WebAssembly threads); the same image as native ONNX Runtime, as
    under Node.js. Then index.html as a person uses it: a photo picked in its file input comes back on its result
    canvas as the same pixels, alpha kept."""
    import subprocess

    import cv2

    from export.app_web import BROWSER_SCRIPT, web_app_run, web_problem
    from export.onnx_export import torch_forward

    problem = web_problem(browser=True)
    if problem:
        pytest.skip(problem)
    model, network = tiny_onnx
    metadata = read_onnx_metadata(network)
    runs = {"chromium onnx": web_app_run(tiled_app[0], browser=True),
            "chromium ort": web_app_run(tiled_app[1], browser=True)}
    for report in check_app_graphs(runs, onnxruntime_forward(network), torch_forward(model), metadata, "RGB",
                                   [(1, 5, 3), (2, 70, 90)], tile=32, overlap=8, drift_only=tuple(runs)):
        assert report.passed and not report.hold_pixels, report.table()
        assert all(r.identical >= 0.999 and r.psnr_db >= 70 for r in report.results), report.table()
    rgb = _images((1, 45, 61), seed=3)[0]
    cv2.imwrite(str(tmp_path / "photo.png"), rgb[..., ::-1])
    done = subprocess.run(["node", str(BROWSER_SCRIPT), "--page", str(tiled_app[1]), str(tmp_path / "photo.png"),
                           str(tmp_path / "page.raw")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["dims"] == [45, 61, 4]
    page = np.fromfile(tmp_path / "page.raw", np.uint8).reshape(45, 61, 4)
    rgba = np.concatenate([rgb, np.full((45, 61, 1), 255, np.uint8)], axis=2)[None]
    expected, finite = runs["chromium ort"](rgba)
    assert finite.all() and np.array_equal(page[..., :3], expected[0]) and (page[..., 3] == 255).all()
    with pytest.raises(RuntimeError, match="onnxruntime-web in Chromium failed"):
        web_app_run(tmp_path / "missing.onnx", browser=True)(_images((1, 8, 8)))


def test_the_browser_check_names_what_is_missing(monkeypatch, tmp_path):
    from export import app_web

    modules = tmp_path / "node_modules"
    (modules / "onnxruntime-web").mkdir(parents=True)
    monkeypatch.setattr(app_web, "WEB_DIR", tmp_path)
    monkeypatch.setattr(app_web.shutil, "which", lambda name: "/usr/bin/node" if name == "node" else None)
    monkeypatch.delenv("CHROMIUM", raising=False)
    assert app_web.web_problem() is None  # Node.js alone needs no browser
    assert "playwright-core not installed: npm ci --prefix apps/web" in app_web.web_problem(browser=True)
    (modules / "playwright-core").mkdir()
    assert "Chromium is not installed (apt install chromium" in app_web.web_problem(browser=True)
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "missing"))
    assert "Chromium is not installed" in app_web.web_problem(browser=True)
    (tmp_path / "chrome").write_bytes(b"")
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "chrome"))
    assert app_web.web_problem(browser=True) is None


def test_drift_only_reports_still_fail_on_drift():
    rng = np.random.default_rng(0)
    runtime = rng.integers(1, 255, (1, 50, 50, 3), dtype=np.uint8)
    off = np.clip(runtime.astype(int) + rng.integers(-3, 4, runtime.shape), 0, 255).astype(np.uint8)
    kept = judge_shape((1, 50, 50), off, np.array([True]), runtime, runtime, 30.0, hold_pixels=False)
    assert kept.passed and kept.max_level_difference == 3  # pixels reported, not required
    assert not judge_shape((1, 50, 50), off, np.array([True]), runtime, runtime, 30.0).passed
    assert not judge_shape((1, 50, 50), off, np.array([True]), runtime, runtime, 60.0, hold_pixels=False).passed


def test_cli_check_web_refused_before_work_where_it_cannot_run(tiny_weights, capsys, monkeypatch):
    monkeypatch.setattr("export.app_web.web_problem", lambda browser=False: "Node.js is not installed (node runs ...)")
    assert main(["--weights", str(tiny_weights), "--check-web"]) == 1
    assert "--check-web: Node.js is not installed" in capsys.readouterr().err
    monkeypatch.setattr("export.app_web.web_problem", lambda browser=False: "Chromium is not installed" if browser
                        else None)
    assert main(["--weights", str(tiny_weights), "--check-browser"]) == 1
    assert "--check-browser: Chromium is not installed" in capsys.readouterr().err


def test_cli_refuses_a_tile_below_the_exports_smallest_side(tmp_path, tiny_weights, capsys):
    from banet.checkpoint import load_checkpoint
    from banet.hashing import file_sha256

    loaded = load_checkpoint(tiny_weights)  # exported for 16 px and up (exports default to 2: the size multiple)
    network = tmp_path / "tiny16.onnx"
    export_onnx(loaded.model, network, ExportOptions(min_size=16, verify_shapes=[(1, 16, 16)]),
                file_sha256(tiny_weights), tiny_weights.name, loaded.config)
    assert main(["--weights", str(tiny_weights), "--onnx", str(network), "--tile", "12", "--overlap", "2",
                 "--output", str(tmp_path / "a.onnx")]) == 1
    err = capsys.readouterr().err
    assert "at least 16" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("a*"))


def test_openvino_runs_the_tiled_app_graph(tiny_onnx, tiled_app):
    """What an app built on OpenVINO runs: the FP32 graph (Loop, If, ScatterND) gives the native pixels."""
    pytest.importorskip("openvino", reason="OpenVINO is the openvino extra")
    from export.app_check import openvino_app_run
    from export.onnx_export import torch_forward

    model, network = tiny_onnx
    metadata = read_onnx_metadata(network)
    [report] = check_app_graphs({"ov": openvino_app_run(tiled_app[0])}, onnxruntime_forward(network),
                                torch_forward(model), metadata, "RGB", [(1, 5, 3), (2, 70, 90)], tile=32, overlap=8,
                                drift_only=("ov",))
    assert report.passed and all(r.identical >= 0.999 and r.psnr_db >= 70 for r in report.results), report.table()


def test_cli_checks_other_engines_and_records_them(tmp_path, tiny_weights, capsys, monkeypatch):
    from export import app_web

    if app_web.web_problem():
        pytest.skip(app_web.web_problem())
    pytest.importorskip("openvino", reason="OpenVINO is the openvino extra")
    monkeypatch.setattr("export.to_app.APP_SWEEP", ((1, 6, 10),))
    monkeypatch.setattr("export.to_app.web_sweep", lambda tile, overlap: ((1, 5, 3),))
    report = tmp_path / "r.json"
    assert main(["--weights", str(tiny_weights), "--output", str(tmp_path / "a.onnx"), "--check-web",
                 "--check-openvino", "--report", str(report), "-q"]) == 0
    assert "onnxruntime-web: worst" in capsys.readouterr().out
    checks = {c["artifact"]: c for c in json.loads(report.read_text())["checks"]}
    assert set(checks) == {"a.onnx", "a.ort", "a.onnx (onnxruntime-web)", "a.ort (onnxruntime-web)",
                           "a.onnx (OpenVINO)"}
    assert all(c["passed"] for c in checks.values()) and not checks["a.onnx (OpenVINO)"]["hold_pixels"]


def test_an_overlap_without_tiles_is_refused_not_ignored(capsys):
    assert main(["--tile", "0", "--overlap", "5"]) == 2  # was accepted, the overlap ignored
    assert "--overlap 5 overlaps tiles, and --tile 0 runs whole images" in capsys.readouterr().err


def test_the_default_model_s_int8_app_graph_wraps_its_shipped_int8_file(capsys):
    """``python export/to_app.py --precision int8``, the browser recipe's first step, failed on a fresh checkout
    ("INT8 file not found") although the default model ships its INT8 file, which Deblurrer runs. The app graph
    goes to the engines folder, never beside the package's weights."""
    from banet.artifacts import engines_dir
    from banet.defaults import DEFAULT_ONNX, default_weights_path
    from export.to_app import build_parser, network_file, outputs_of

    args = build_parser().parse_args(["--precision", "int8"])
    network = network_file(args, default_weights_path())
    assert network == DEFAULT_ONNX.with_name("banet_default_int8_ort.onnx")
    assert outputs_of(args, network)[0] == engines_dir() / "banet_default_int8_ort_app.onnx"


def test_serving_the_page_on_a_busy_port_is_one_line(tmp_path):
    """Round 17: ``browser.mjs --serve`` on a port in use ended in Node's 'error' event stack; a missing model got
    the usage line."""
    import shutil
    import socket
    import subprocess

    from export.app_web import BROWSER_SCRIPT

    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    model = tmp_path / "m.ort"
    model.write_bytes(b"x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(["node", str(BROWSER_SCRIPT), "--serve", str(model), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: EADDRINUSE; " \
                                                            "pick another --port", done.stderr
    done = subprocess.run(["node", str(BROWSER_SCRIPT), "--serve", str(tmp_path / "none.ort")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {tmp_path / 'none.ort'} does not exist"
    # without onnxruntime-web beside it (a clone without npm ci) it served a page that could not load
    alone = tmp_path / "web"
    alone.mkdir()
    shutil.copy(BROWSER_SCRIPT, alone / "browser.mjs")
    done = subprocess.run(["node", str(alone / "browser.mjs"), "--serve", str(model)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "onnxruntime-web is not installed: npm ci --prefix apps/web" in done.stderr
