"""Third robustness round on the runtime (a camera, video or robotics app's inputs, and an attacker's): each case
ended in a traceback from deep inside a library, a misleading message, or a silently changed result before.

Fast: the shipped default ONNX on ONNX Runtime (one thread) at 40x56, and the tiny checkpoint for the command line.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime import Deblurrer, ImageFormatError, ModelNotFoundError, OptionError
from runtime.backends.base import ShapeCache
from runtime.cli import main
from runtime.images import read_image, write_image
from tests.runtime.sample_images import mjpeg_video
from tests.runtime.sample_images import random_image as _image


@pytest.fixture
def deblur(onnx_path):
    with Deblurrer(onnx_path, backend="onnxruntime", threads=1) as deblurrer:
        yield deblurrer


# -- the API ----------------------------------------------------------------------------------------------------------
class _CloseFirst:
    """A lock that lets close() win the race: it closes the Deblurrer just before the run takes the lock, as
    another thread's close() does when it gets the lock first."""

    def __init__(self, deblurrer: Deblurrer) -> None:
        self.deblurrer, self.inner = deblurrer, threading.Lock()

    def __enter__(self):
        self.inner.acquire()
        if self.deblurrer.backend is not None:
            self.deblurrer.backend.close()
            self.deblurrer.backend = None

    def __exit__(self, *exc) -> None:
        self.inner.release()


def test_a_close_from_another_thread_before_the_run_refuses_instead_of_running_a_closed_backend(deblur):
    backend = deblur.backend
    runs = []
    real_run = backend.run
    backend.run = lambda batch: runs.append(batch.shape) or real_run(batch)
    deblur._lock = _CloseFirst(deblur)
    # Before: ONNX Runtime reopened a session for the closed backend and returned a result; OpenVINO failed with
    # "'NoneType' object has no attribute 'reshape'".
    with pytest.raises(RuntimeError, match="closed"):
        deblur(_image())
    assert runs == []


def test_a_huge_finite_memory_budget_means_no_limit_instead_of_a_nan_crash(onnx_path):
    with Deblurrer(onnx_path, backend="onnxruntime", threads=1, memory_budget_mb=1e308) as deblur:
        assert deblur.tile_for(3000, 4000) is None  # before: "cannot convert float NaN to integer"
        assert deblur(_image()).shape == (40, 56, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "ort"}, "unknown backend 'ort'"),
    ({"backend": "ONNXRUNTIME"}, "unknown backend"),
    ({"model": ""}, "empty path"),
    ({"threads": 10**6}, "threads must be at most"),
    ({"threads": 2**40}, "threads must be at most"),
])
def test_a_bad_backend_name_empty_model_or_absurd_thread_count_is_an_option_error_before_opening(kwargs, message,
                                                                                               tmp_path):
    kwargs = {"model": tmp_path / "never_opened.onnx", **kwargs}
    with pytest.raises(OptionError, match=message) as info:
        Deblurrer(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "meta"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),  # before: NotImplementedError from PyTorch
    ({"device": "gpu"}, "device must be"),                               # before: PyTorch's 20-name RuntimeError
    ({"device": "CUDA"}, "device must be"),
    ({"backend": "onnxruntime", "providers": [("CPUExecutionProvider", "notadict")]},  # before: ONNX Runtime
     "providers must be"),                                                         # printed a banner, fell back
])
def test_a_device_pytorch_cannot_use_or_malformed_providers_are_option_errors(kwargs, message, tmp_path):
    with pytest.raises(OptionError, match=message):
        Deblurrer(tmp_path / "never_opened.safetensors", **kwargs)


def test_openvino_takes_cpu_in_lower_case(onnx_path):
    pytest.importorskip("openvino")
    with Deblurrer(onnx_path, backend="openvino", device="cpu", threads=1) as deblur:  # before: "not available"
        assert deblur(_image()).shape == (40, 56, 3)


def test_a_model_folder_is_named_as_a_folder(tmp_path):
    folder = tmp_path / "models.onnx"
    folder.mkdir()
    for model in (tmp_path, folder):  # before: "cannot tell the backend from the extension ''", "not a file"
        with pytest.raises(ModelNotFoundError, match="is a folder, not a model file"):
            Deblurrer(model)


def test_a_bad_shape_cache_is_an_option_error(onnx_path):
    for size in (0, "4", 2.0, True):
        with pytest.raises(OptionError, match="shape_cache"):
            ShapeCache(lambda shape: shape, size)
    with pytest.raises(OptionError, match="shape_cache"):
        Deblurrer(onnx_path, backend="onnxruntime", static=True, shape_cache=0)
    assert ShapeCache(lambda shape: shape, np.int64(2)).size == 2


def test_a_bad_image_in_a_list_is_named_by_index_before_any_image_runs(deblur):
    runs = []
    real_run = deblur.backend.run
    deblur.backend.run = lambda batch: runs.append(batch.shape) or real_run(batch)
    good = _image()
    for bad, message in ((good > 128, "image 2 of the list: unsupported image dtype bool"),
                         (good.astype(np.int16), "image 2 of the list: unsupported image dtype int16"),
                         (None, "image 2 of the list: expected a numpy array"),
                         # its range too (before: the stacked batch's error, no index, after the others ran)
                         (good / 255.0 * 7, r"image 2 of the list: float images must be in \[0, 1\]"),
                         (np.full((8, 8, 3), np.nan), "image 2 of the list: float image contains NaN")):
        with pytest.raises(ImageFormatError, match=message):
            deblur.deblur_batch([good, good[:20], bad])
    assert runs == []  # before: the good images ran first, then an error that did not say which image
    with pytest.raises(ImageFormatError, match="^unsupported image dtype bool"):
        deblur(good > 128)  # one image: no index


def test_pil_lab_gets_no_alpha_and_premultiplied_alpha_is_kept(deblur):
    lab = Image.fromarray(_image()).convert("LAB")
    assert deblur(lab).mode == "RGB"  # before: RGBA (the "A" of "LAB" was taken for alpha)
    premultiplied = Image.fromarray(np.dstack([_image(), np.full((40, 56), 128, np.uint8)]), "RGBA").convert("RGBa")
    out = deblur(premultiplied)
    assert out.mode == "RGBA" and np.all(np.asarray(out)[..., 3] == 128)  # before: RGB, the alpha dropped


def test_float_colour_tiffs_are_written_losslessly(tmp_path):
    image = np.random.default_rng(0).random((40, 56, 3)).astype(np.float32)
    write_image(tmp_path / "f.tiff", image)
    # before: OpenCV's default for float colour TIFFs (SGILOG, lossy): 2% errors, values outside [0, 1]
    assert np.array_equal(read_image(tmp_path / "f.tiff"), image)


# -- the command line ----------------------------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_an_output_that_is_a_file_or_a_target_that_is_a_folder_is_one_clear_line(tmp_path, tiny_weights, capsys):
    write_image(tmp_path / "a.png", _image())
    (tmp_path / "taken").write_text("mine")
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "taken"), "--model", str(tiny_weights), "-q"]) == 1
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)  # before: "[Errno 17] File exists"
    assert (tmp_path / "taken").read_text() == "mine"
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q",
                 "--force"]) == 1  # before: "exists; pass --force", then with --force "Is a directory"
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    assert (tmp_path / "out" / "a.png").is_dir()


def test_a_file_reached_twice_is_deblurred_once(tmp_path, tiny_weights, capsys):
    write_image(_mkdir(tmp_path / "in") / "a.png", _image())
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "." / "a.png"), "-o",
                 str(out), "--model", str(tiny_weights), "-q"]) == 0  # before: refused as a collision with itself
    assert "deblurred 1 of 1" in capsys.readouterr().out and [p.name for p in out.iterdir()] == ["a.png"]


def test_writing_into_the_input_folder_names_the_input_even_through_a_symlink(tmp_path, tiny_weights, capsys):
    photos = _mkdir(tmp_path / "in")
    write_image(photos / "a.png", _image())
    (photos / "b.png").symlink_to(photos / "a.png")
    assert main([str(photos), "-o", str(photos), "--model", str(tiny_weights), "-q", "--force"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "is the same file as the input" in line and "would both be written" not in line, line
    assert (photos / "b.png").is_symlink()


def _odd_video(path: Path, frames: int = 3) -> Path:
    """An MJPEG AVI of 47x33 frames (OpenCV's own writer keeps odd sizes; its FFmpeg one would not)."""
    return mjpeg_video(path, frames, 33, 47)


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_odd_sized_video_frames_keep_every_pixel_and_quiet_means_no_progress_bars(tmp_path, tiny_weights, capsys,
                                                                                  caplog):
    clip = _odd_video(tmp_path / "clip.avi")
    assert _frames(clip)[0].shape == (33, 47, 3)
    out = tmp_path / "out"
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    frames = _frames(out / "clip.mp4")
    # before: 46x32, the last column and row of every frame dropped without a word
    assert len(frames) == 3 and frames[0].shape == (34, 48, 3)
    assert "clip.avi: 33x47 frames are written as 34x48" in caplog.text
    err = capsys.readouterr().err
    assert "frame" not in err and "clip.avi" not in err, err  # before: -q still showed the video's progress bar


def test_decoder_warnings_stay_off_stderr(tmp_path, tiny_weights, capfd, monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    write_image(_mkdir(tmp_path / "in") / "a.png", _image())
    data = (tmp_path / "in" / "a.png").read_bytes()
    (tmp_path / "in" / "cut.png").write_bytes(data[:-30])  # OpenCV: "[ WARN:0] ... PNG input buffer is incomplete"
    (tmp_path / "in" / "half.png").write_bytes(data[:len(data) // 2])  # libpng itself: "libpng error: PNG input
    # buffer is incomplete", printed on stderr whatever OpenCV's log level
    (tmp_path / "in" / "fake.mp4").write_text("not a video")  # FFmpeg: "moov atom not found"
    level = cv2.getLogLevel()
    try:
        assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 1
    finally:
        cv2.setLogLevel(level)
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), err
    assert "half.png: the PNG file is cut short" in err


def _mkdir(path: Path) -> Path:
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True)
    return path
