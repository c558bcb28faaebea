"""Real inputs must not break the runtime: bad artifacts, bad arrays, data-loss traps, huge images.

Each case is one the issue-14 audit found (or one of its neighbours): it must end in a clear one-line error or
the right result, never a traceback, a silently garbage image, or a user's file overwritten.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.metadata import ArtifactError, read_onnx_metadata
from banet.model import BANet
from runtime import Deblurrer
from runtime.cli import main
from runtime.images import read_image, write_image
from runtime.tiling import budget_tile


def _image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines, err
    assert "Traceback" not in err, err


@pytest.fixture
def exported_onnx(tiny_weights):
    """The tiny network's ONNX, exported and verified through the runtime's own cache."""
    from export.checkpoint_onnx import onnx_for_checkpoint

    return onnx_for_checkpoint(tiny_weights)


# -- bad model files ------------------------------------------------------------------------------------------------
def _foreign_onnx_with_banet_metadata(path, source_onnx):
    """A one-convolution graph with BANet's metadata copied in: it must not pass for BANet."""
    conv = helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 3, 3], np.zeros(81, np.float32).tolist())
    graph = helper.make_graph([conv], "foreign",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [weight])
    model = helper.make_model(graph)
    for entry in onnx.load(str(source_onnx)).metadata_props:
        model.metadata_props.add(key=entry.key, value=entry.value)
    onnx.save(model, str(path))
    return path


def _bad_onnx(kind: str, tmp_path, source_onnx):
    path = tmp_path / f"{kind}.onnx"
    data = source_onnx.read_bytes()
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_metadata":
        model = onnx.load(str(source_onnx))
        del model.metadata_props[:]
        onnx.save(model, str(path))
    elif kind == "foreign":
        _foreign_onnx_with_banet_metadata(path, source_onnx)
    return path


BAD_ONNX = ("random", "truncated", "empty", "no_metadata", "foreign")


@pytest.mark.parametrize("kind", BAD_ONNX)
def test_bad_onnx_is_refused_with_one_line(kind, tmp_path, exported_onnx, capsys):
    path = _bad_onnx(kind, tmp_path, exported_onnx)
    with pytest.raises(ArtifactError) as info:
        read_onnx_metadata(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    write_image(tmp_path / "a.png", _image())
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(path), "-q"]) == 1
    _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "out" / "a.png").exists()


def test_foreign_graph_names_what_is_wrong(tmp_path, exported_onnx):
    path = _bad_onnx("foreign", tmp_path, exported_onnx)
    with pytest.raises(ArtifactError, match="1 convolutions where 47 are expected"):
        Deblurrer(path)


@pytest.mark.parametrize("content", ["[]", "{}", "not json", '{"schema": 1}'])
def test_bad_engine_manifest_is_one_line(content, tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    engine.with_suffix(".json").write_text(content)
    write_image(tmp_path / "a.png", _image())
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(engine), "-q"]) == 1
    _one_line_error(capsys.readouterr().err)


def test_missing_model_is_one_line(tmp_path, capsys):
    write_image(tmp_path / "a.png", _image())
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no.onnx")]) == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "not found" in err


# -- a network that outputs NaN: each file fails, the batch goes on ------------------------------------------------
def test_nan_output_fails_each_file_and_the_run_goes_on(tmp_path, capsys):
    model = BANet(BANetConfig(2, 8, 16))
    with torch.no_grad():
        model.de_layer3[0].bias.fill_(float("nan"))
    weights = save_checkpoint(model, tmp_path / "nan.safetensors")
    for name in ("a.png", "b.png"):
        write_image(_mkdir(tmp_path / "in") / name, _image())
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG truncated")
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(weights)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("error:") == 3 and "NaN" in captured.err and "Traceback" not in captured.err
    assert "deblurred 0 of 3" in captured.out
    assert not list((tmp_path / "out").glob("*.png"))


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- never lose data ---------------------------------------------------------------------------------------------
def test_same_name_from_two_folders_is_refused_before_writing(tmp_path, tiny_weights, capsys):
    write_image(_mkdir(tmp_path / "a") / "x.png", _image(seed=1))
    write_image(_mkdir(tmp_path / "b") / "x.png", _image(seed=2))
    out = tmp_path / "out"
    assert main([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(out),
                 "--model", str(tiny_weights)]) == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "would both be written" in err and not out.exists()


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_output_that_is_the_input_is_refused_even_with_force(link, tmp_path, tiny_weights, capsys):
    source = _mkdir(tmp_path / "in") / "photo.png"
    write_image(source, _image())
    before = source.read_bytes()
    out = _mkdir(tmp_path / "out")
    (os.link if link == "hard" else os.symlink)(source, out / "photo.png")
    assert main([str(source), "-o", str(out), "--model", str(tiny_weights), "--force", "-q"]) == 1
    assert "is the same file as the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_forced_replace_swaps_the_file_instead_of_writing_through_it(tmp_path, tiny_weights):
    """An output that is a hard link of a file that is *not* an input: --force replaces the directory entry,
    so the other name keeps its content."""
    keep = tmp_path / "keep.png"
    write_image(keep, _image(seed=3))
    before = keep.read_bytes()
    out = _mkdir(tmp_path / "out")
    os.link(keep, out / "a.png")
    write_image(_mkdir(tmp_path / "in") / "a.png", _image())
    assert main([str(tmp_path / "in" / "a.png"), "-o", str(out), "--model", str(tiny_weights), "--force",
                 "-q"]) == 0
    assert keep.read_bytes() == before and (out / "a.png").read_bytes() != before
    assert not list(out.glob(".*partial*"))


def test_existing_video_output_is_not_replaced_without_force(tmp_path, tiny_weights, capsys):
    import cv2

    clip = _mkdir(tmp_path / "in") / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for i in range(3):
        writer.write(_image(24, 32, seed=i))
    writer.release()
    out = _mkdir(tmp_path / "out")
    (out / "clip.mp4").write_bytes(b"my earlier result")
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    assert "clip.mp4 exists" in capsys.readouterr().err
    assert (out / "clip.mp4").read_bytes() == b"my earlier result"
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "--force", "-q"]) == 0
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


# -- PIL modes that used to come back white or black ------------------------------------------------------------
def test_pil_16bit_and_float_modes_round_trip(tiny_weights):
    from PIL import Image

    grey16 = np.random.default_rng(0).integers(0, 65536, (40, 56)).astype(np.int32)
    unit = (grey16 / 65535.0).astype(np.float32)
    with Deblurrer(tiny_weights) as deblur:
        as_i = deblur(Image.fromarray(grey16))
        as_f = deblur(Image.fromarray(unit))
        reference = deblur(grey16.astype(np.uint16))
    assert as_i.mode == "I" and as_f.mode == "F"
    assert np.array_equal(np.asarray(as_i), reference.astype(np.int32))
    assert np.abs(np.asarray(as_f) * 65535.0 - reference).max() <= 1.0
    assert 0.2 < np.asarray(as_f).mean() < 0.8  # neither black nor white
    with pytest.raises(ValueError, match="16-bit"), Deblurrer(tiny_weights) as deblur:
        deblur(Image.fromarray(np.full((8, 8), 70000, np.int32)))


# -- tiling arguments and the memory budget ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [({"tile_overlap": -8}, "tile_overlap"), ({"tile": 0}, "tile"),
                                             ({"tile": 33}, "multiple of 2"), ({"memory_budget_mb": 0}, "budget")])
def test_bad_tiling_arguments_are_named(kwargs, message, tiny_weights):
    with pytest.raises(ValueError, match=message):
        Deblurrer(tiny_weights, **kwargs)


def test_budget_tile_fits_the_budget():
    assert budget_tile(100, 100, 20000, 2, 8) == (100, 100)
    th, tw = budget_tile(3000, 4000, 900_000, 2, 66)
    assert th * tw <= 900_000 and th % 2 == 0 and tw % 2 == 0 and th > 900
    th, tw = budget_tile(64, 100_000, 900_000, 2, 66)  # a long strip: full height, wide tiles
    assert th == 64 and th * tw <= 900_000 and tw > 10_000


class _Recorder:
    """Wraps a backend's ``run`` to record the shapes it is given."""

    def __init__(self, deblurrer: Deblurrer) -> None:
        self.shapes: list[tuple[int, ...]] = []
        run = deblurrer.backend.run

        def record(batch):
            self.shapes.append(batch.shape)
            return run(batch)

        deblurrer.backend.run = record


def test_memory_budget_tiles_large_images_and_chunks_batches(tiny_weights):
    image = _image(300, 400)
    with Deblurrer(tiny_weights, memory_budget_mb=None) as unbounded:
        reference = unbounded(image)
    with Deblurrer(tiny_weights, memory_budget_mb=2) as bounded:
        recorder = _Recorder(bounded)
        tiled = bounded(image)
        budget = bounded._budget_pixels()
        assert len(recorder.shapes) > 1 and all(h * w <= budget for _, _, h, w in recorder.shapes)
        recorder.shapes.clear()
        bounded.deblur_batch([_image(60, 80, seed=s) for s in range(6)])
        assert all(n * h * w <= budget for n, _, h, w in recorder.shapes) and len(recorder.shapes) > 1
    assert tiled.shape == reference.shape
    mse = np.mean((tiled.astype(np.float64) - reference) ** 2)
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 30.0  # blended tiles stay close to the untiled result


def test_default_budget_tiles_a_12mp_photo_without_running_it(tiny_weights):
    """A 4000x3000 photo is split under the default budget (running it is a benchmark, not a test)."""
    with Deblurrer(tiny_weights) as deblur:
        tile = deblur._tile_size(3000, 4000)
        assert tile is not None and tile[0] * tile[1] <= deblur._budget_pixels()


# -- other commands: bad files get one line ----------------------------------------------------------------------
def test_evaluate_refuses_bad_weights_with_one_line(tmp_path, capsys):
    from training.evaluate import main as evaluate

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert evaluate(["--weights", str(bad), "--output", str(tmp_path / "eval")]) == 1
    _one_line_error(capsys.readouterr().err)
    assert evaluate(["--weights", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "eval")]) == 1
    _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["random", "foreign", "no_metadata"])
def test_to_triton_refuses_a_bad_onnx_with_one_line(kind, tmp_path, exported_onnx, capsys):
    from export.to_triton import main as to_triton

    path = _bad_onnx(kind, tmp_path, exported_onnx)
    assert to_triton(["--onnx", str(path), "--repository", str(tmp_path / "repo")]) == 1
    _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "repo").exists()


def test_read_image_refuses_truncated_and_foreign_files(tmp_path):
    from runtime.images import ImageReadError

    good = tmp_path / "a.png"
    write_image(good, _image())
    truncated = tmp_path / "t.png"
    truncated.write_bytes(good.read_bytes()[:40])
    (tmp_path / "x.png").write_text("hello")
    for path in (truncated, tmp_path / "x.png", tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageReadError):
            read_image(path)
    assert read_image(good).shape == (40, 56, 3)
