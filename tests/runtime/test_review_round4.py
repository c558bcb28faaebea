"""Fourth robustness round on the runtime (a review's findings): a closed Deblurrer's error has a name, device="cpu"
is taken by the CPU engines, misused options are OptionError, a refused tile closes what was opened, and a link
planted at a video's temporary name is never written through.

Fast: the shipped default ONNX on ONNX Runtime (one thread) at 40x56, and the tiny checkpoint for the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import banet.outputs
from runtime import Deblurrer, DeblurrerClosedError, OptionError
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.cli import main
from runtime.images import write_image
from runtime.selection import choose
from tests.runtime.sample_images import mjpeg_video
from tests.runtime.sample_images import random_image as _image


# -- the API ----------------------------------------------------------------------------------------------------------
def test_a_closed_deblurrer_raises_its_own_error_still_a_runtime_error(onnx_path):
    deblur = Deblurrer(onnx_path, backend="onnxruntime", threads=1)
    deblur.close()
    with pytest.raises(DeblurrerClosedError, match="closed") as info:  # before: a plain RuntimeError
        deblur(_image())
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(DeblurrerClosedError):
        deblur.deblur_batch([_image()])


def test_device_cpu_is_taken_by_onnx_runtime(onnx_path, monkeypatch):
    # Before: "the onnxruntime backend for banet_default.onnx takes no option 'device'" (OpenVINO took it).
    with Deblurrer(backend="onnxruntime", device="cpu", threads=1) as deblur:
        assert deblur.backend.providers == ["CPUExecutionProvider"]
        assert deblur(_image()).shape == (40, 56, 3)
    monkeypatch.setattr("runtime.selection.auto_backend", lambda model: "onnxruntime")  # no OpenVINO installed
    with Deblurrer(device="cpu", threads=1) as deblur:
        assert deblur.backend.name == "onnxruntime"
    with Deblurrer(onnx_path, device="CPU", threads=1, providers=["CPUExecutionProvider"]) as deblur:
        assert deblur.backend.name == "onnxruntime"


@pytest.mark.parametrize("options, message", [
    ({"device": "cuda"}, "takes device='cpu'"),
    ({"device": 0}, "takes device='cpu'"),
    ({"device": "cpu", "providers": ["CUDAExecutionProvider"]}, "disagree"),
])
def test_other_devices_on_onnx_runtime_are_one_option_line(onnx_path, options, message):
    with pytest.raises(OptionError, match=message):
        Deblurrer(onnx_path, threads=1, **options)


def test_device_cuda_still_means_the_checkpoint_on_pytorch():
    assert choose(None, None, None, {"device": "cuda"})[1] == "torch"
    assert choose(None, None, None, {"device": "cpu"})[1] in ("openvino", "onnxruntime")


def test_misused_options_are_option_errors_and_still_value_errors():
    # Before: plain ValueErrors, which `except OptionError` in an app did not catch.
    with pytest.raises(OptionError, match="tensorrt backend runs engines") as info:
        Deblurrer(backend="tensorrt")
    assert isinstance(info.value, ValueError)
    pytest.importorskip("torch")
    with pytest.raises(OptionError, match="half precision is for GPUs") as info:
        Deblurrer(backend="torch", device="cpu", half=True)
    assert isinstance(info.value, ValueError)


def test_a_tile_off_the_size_multiple_closes_the_backend_it_opened(onnx_path, monkeypatch):
    closed = []
    real_close = OnnxRuntimeBackend.close
    monkeypatch.setattr(OnnxRuntimeBackend, "close", lambda self: closed.append(self) or real_close(self))
    for tile in (99, 40):  # off the size multiple (2, from the model's metadata); under twice the overlap
        with pytest.raises(OptionError, match="tile must be a multiple of 2 and at least twice tile_overlap"):
            Deblurrer(onnx_path, backend="onnxruntime", threads=1, tile=tile)
    assert len(closed) == 2  # before: left open, its sessions held until garbage collection


# -- the command line ----------------------------------------------------------------------------------------------
def _video(path: Path, frames: int = 2) -> Path:
    return mjpeg_video(path, frames, 32, 48)


def test_a_link_planted_at_a_videos_temporary_name_is_never_written_through(tmp_path, tiny_weights):
    clip = _video(tmp_path / "clip.avi")
    victim = tmp_path / "victim.png"
    write_image(victim, _image())
    original = victim.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4.partial.mp4").symlink_to(victim)  # before: OpenCV wrote the video into victim.png
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    assert victim.read_bytes() == original
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"] and not (out / "clip.mp4").is_symlink()
    assert (out / "clip.mp4").stat().st_size > 0


def test_a_link_planted_again_while_the_video_writer_opens_is_refused(tmp_path, tiny_weights, monkeypatch, capsys):
    clip = _video(tmp_path / "clip.avi")
    victim = tmp_path / "victim.png"
    write_image(victim, _image())
    original = victim.read_bytes()
    out = tmp_path / "out"

    def clear_then_plant(partial):  # someone quicker than the writer puts a link back
        Path(partial).unlink(missing_ok=True)
        Path(partial).symlink_to(tmp_path / "nowhere.mp4")

    monkeypatch.setattr(banet.outputs, "clear_partial", clear_then_plant)
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err
    assert "refusing to write through it" in err and "Traceback" not in err, err
    assert victim.read_bytes() == original and not (out / "clip.mp4").exists()
    assert not (tmp_path / "nowhere.mp4").exists()  # nothing went through the link (left, as write_atomic leaves it)


def test_an_input_at_an_outputs_temporary_name_is_refused_not_removed(tmp_path):
    from runtime.cli import output_refusals

    out = tmp_path / "out"
    out.mkdir()
    write_image(tmp_path / "a.png", _image())
    (out / "a.png.partial").write_bytes(b"the user's file, given as an input")
    inputs = [tmp_path / "a.png", out / "a.png.partial"]
    refusals = output_refusals(inputs, [out / "a.png", out / "a.png.partial"])
    # Before: only the second was refused (the same file); writing a.png then removed the user's a.png.partial
    # (serving.batch goes on with the files not refused).
    assert "is at the temporary file name of" in refusals[0] and "same file" in refusals[1]
    assert output_refusals(inputs[:1], [out / "a.png"]) == {}
