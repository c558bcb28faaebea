"""Round 16 (2026-12-06), a fresh-eyes audit of the embedding API (``from runtime import Deblurrer``): each case
lost a user's data, returned wrong pixels without a word, or failed deep inside a library."""

from __future__ import annotations

import copy
import functools
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from banet.errors import OptionError
from banet.machine import usable_cpus
from runtime import Deblurrer
from runtime.backends.base import check_compile_cache, check_threads
from runtime.backends.openvino_backend import trim_compile_cache


def test_the_compile_cache_trims_only_openvino_s_own_entries(tmp_path):
    """compile_cache= named a folder with the user's files: trimming it to 512 MiB deleted the oldest of them (a
    600 MB video). Only OpenVINO's ``<hash>.blob`` entries are trimmed now."""
    (tmp_path / "holiday.mp4").write_bytes(b"v" * 4096)
    (tmp_path / "notes.blob.txt").write_text("keep me")
    (tmp_path / "123.blob").write_bytes(b"b" * 2048)
    (tmp_path / "456.blob").write_bytes(b"b" * 2048)
    trim_compile_cache(tmp_path, 2048)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["456.blob", "holiday.mp4", "notes.blob.txt"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["123.blob", "holiday.mp4", "notes.blob.txt"]
    assert (tmp_path / "holiday.mp4").read_bytes() == b"v" * 4096


@pytest.mark.parametrize("folder", ["", "  ", 5, b"x"])
def test_a_compile_cache_that_is_no_folder_is_an_option_error(folder):
    """"" was the working folder (a .blob appeared there, and it was trimmed); 5 a TypeError from pathlib."""
    with pytest.raises(OptionError, match="compile_cache must be"):
        check_compile_cache(folder)
    assert check_compile_cache("auto") == "auto" and check_compile_cache(None) is None


def test_threads_above_the_cpus_are_refused():
    """4096 threads on 2 cores: 15 s a call on PyTorch (8192 threads left after close), minutes for ONNX Runtime to
    open its session. The command lines' rule now holds for the API too."""
    check_threads(usable_cpus())
    with pytest.raises(OptionError, match=r"at most the \d+ CPU"):
        check_threads(usable_cpus() + 1)
    with pytest.raises(OptionError, match="at most"):
        Deblurrer(threads=usable_cpus() + 1)


def _transparent(image: Image.Image) -> int:
    return int((np.asarray(image.convert("RGBA"))[..., 3] == 0).sum())


def _png(array: np.ndarray, **options) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **options)
    buffer.seek(0)
    return Image.open(buffer)


def test_transparency_is_never_dropped(tiny_weights):
    """A palette of RGBA colours (``RGBA.quantize()``) and an L or RGB PNG with a transparent colour came back opaque
    (RGB, L): their transparency was read as a colour. Now each comes back RGBA with the same pixels transparent."""
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., :3], rgba[:, 24:, 3] = 200, 255
    grey = np.full((32, 48), 120, np.uint8)
    grey[:, :24] = 0
    images = [Image.fromarray(rgba).quantize(8), _png(grey, transparency=0),
              _png(np.repeat(grey[..., None], 3, axis=2), transparency=(0, 0, 0))]
    with Deblurrer(tiny_weights) as deblurrer:
        for image in images:
            assert _transparent(image) == 32 * 24
            out = deblurrer(image)
            assert out.mode == "RGBA" and _transparent(out) == 32 * 24, image.mode


@functools.cache
def _rgb_profile() -> bytes:
    """Made once: its header records when (two made a second apart differ)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_a_pil_image_keeps_its_profile_resolution_and_exif(tiny_weights):
    """The returned image had an empty ``info``: a Display P3 photo saved from it showed shifted colours."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "PhoneCam", 6
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(buffer, "JPEG", icc_profile=_rgb_profile(),
                                                               dpi=(300, 300), exif=exif)
    photo = Image.open(buffer)
    with Deblurrer(tiny_weights) as deblurrer:
        out = deblurrer(photo)
        assert out.size == (32, 48)  # upright (orientation 6)
        assert out.info["icc_profile"] == _rgb_profile() and tuple(out.info["dpi"]) == (300, 300)
        assert out.getexif()[0x010F] == "PhoneCam" and out.getexif().get(0x0112, 1) == 1
        # a profile that would misdescribe the result is not carried: an RGB profile on a grey image
        grey = _png(np.full((32, 48), 90, np.uint8), icc_profile=_rgb_profile())
        assert deblurrer(grey).mode == "L" and "icc_profile" not in deblurrer(grey).info


def test_a_deblurrer_is_neither_copied_nor_pickled(tiny_weights):
    """copy.copy shared the open model: closing the copy broke the original deep inside (AttributeError,
    TypeError); pickling failed on a lock."""
    image = np.zeros((16, 16, 3), np.uint8)
    with Deblurrer(tiny_weights) as deblurrer:
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be (copied|pickled): it holds an open model"):
                attempt(deblurrer)
        assert deblurrer(image).shape == image.shape


ROOT = Path(__file__).resolve().parents[2]


def test_odd_option_values_are_option_errors(tiny_weights):
    with pytest.raises(OptionError, match="profile must be True or False"):
        Deblurrer(tiny_weights, profile="no")  # a truthy string turned profiling on
    with Deblurrer(tiny_weights, graph_cache=np.int64(4)) as deblurrer:  # numpy integers, as shape_cache takes
        assert deblurrer(np.zeros((16, 16, 3), np.uint8)).shape == (16, 16, 3)
    with pytest.raises(OptionError, match="the torch backend runs checkpoints"):  # was a bare ValueError
        Deblurrer(ROOT / "banet" / "weights" / "banet_default.onnx", backend="torch")


def test_a_tile_overlap_that_cannot_tile_is_an_option_error(tiny_weights):
    """A bare ValueError from runtime/tiling.py, for every image over the tile size."""
    with Deblurrer(tiny_weights, tile=64, tile_overlap=16) as deblurrer:
        deblurrer.tile_overlap = 64  # what a budget's smaller tile meets: the overlap is not under the tile
        with pytest.raises(OptionError, match="tile_overlap=64 cannot tile a 64x200 image"):
            deblurrer(np.zeros((64, 200, 3), np.uint8))


def test_deblur_batch_runs_a_long_list_in_chunks_the_budget_allows(tiny_weights, monkeypatch):
    """24 images of 600x600 stacked whole held 609 MB more than one at a time, outside the memory budget."""
    sizes = []
    with Deblurrer(tiny_weights, memory_budget_mb=1) as deblurrer:
        real = deblurrer._restore

        def restore(images, order):
            sizes.append(len(images))
            return real(images, order)

        monkeypatch.setattr(deblurrer, "_restore", restore)
        per_chunk = max(1, deblurrer._budget_pixels() // (16 * 16))
        images = [np.full((16, 16, 3), i, np.uint8) for i in range(per_chunk * 2 + 1)]
        out = deblurrer.deblur_batch(images)
        assert sizes == [per_chunk, per_chunk, 1]
        one_by_one = [deblurrer(image) for image in images]
    assert all(np.array_equal(a, b) for a, b in zip(out, one_by_one))


def test_a_checkpoint_with_precision_int8_runs_its_int8_file_on_a_cpu_backend(monkeypatch, tmp_path):
    """Deblurrer(checkpoint, precision="int8") was told to build a TensorRT engine; its INT8 file in the engines
    folder runs on the fastest CPU backend, as for the default model."""
    from banet.defaults import default_weights_path
    from runtime.selection import INT8_FLAVOUR, choose

    pytest.importorskip("onnxruntime", reason="the INT8 file runs on ONNX Runtime or OpenVINO")
    import shutil

    for name in ("banet_default.onnx", "banet_default_int8_ort.onnx", "banet_default_int8_ov.onnx"):
        shutil.copy(ROOT / "banet" / "weights" / name, tmp_path / name)  # a checkpoint's INT8 files, made
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    chosen, backend = choose(Path(default_weights_path()), None, "int8")
    assert backend in INT8_FLAVOUR and "_int8_" in chosen.name


@pytest.mark.parametrize("shape", [(16, 300), (300, 6)])
def test_a_thin_strip_tiled_along_its_length_is_not_refused_for_its_width(tiny_weights, shape):
    """Round 17: a 16x4200 strip on the default Deblurrer (ONNX files take at most 4096) was refused ("tile_overlap=32
    cannot tile 16x4200 ...; give a tile_overlap under 16"): its 16 rows are not cut, so need no overlap."""
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8)
    with Deblurrer(tiny_weights, tile=128, tile_overlap=32) as deblurrer:
        out = deblurrer(image)
        assert out.shape == image.shape
        deblurrer.tile_overlap = 200  # now the long side's tiles (128) are under it: refused, naming the image
        listed = [np.zeros((20, 20, 3), np.uint8), image]
        with pytest.raises(OptionError, match=rf"^image 1 of the list: tile_overlap=200 cannot tile a "
                                              rf"{shape[0]}x{shape[1]} image: its tiles are"):
            deblurrer.deblur_batch(listed)


def test_tile_for_plans_on_the_size_the_network_is_given(tiny_weights):
    """Round 17: tile_for planned on the unpadded size: an odd 201x255 image was said to run whole where a call ran
    it in two tiles (benchmarks recorded it as untiled)."""
    with Deblurrer(tiny_weights, tile_overlap=16) as deblurrer:
        deblurrer.memory_budget_mb = (201 * 255 * deblurrer._bytes_per_pixel + 1) / 2**20  # 201x255 fits, 202x256 not
        assert deblurrer.tile_for(201, 255) is not None
        calls = []
        forward = deblurrer._forward
        deblurrer._forward = lambda batch: (calls.append(batch.shape), forward(batch))[1]
        deblurrer(np.zeros((201, 255, 3), np.uint8))
        assert len(calls) > 1  # tiled, as tile_for says


def test_a_channels_first_array_is_told_to_put_its_channels_last(tiny_weights):
    """Round 17: a CxHxW array (what torch code holds) was told to "pass batches as a list of images"."""
    from banet.processing import ImageFormatError

    with Deblurrer(tiny_weights) as deblurrer:
        with pytest.raises(ImageFormatError, match=r"channels-first \(CxHxW\) image\? put the channels last: "
                                                   r"image\.transpose\(1, 2, 0\)"):
            deblurrer(np.zeros((3, 64, 96), np.float32))
        with pytest.raises(ImageFormatError, match="pass batches as a list of images"):
            deblurrer(np.zeros((2, 64, 96, 3), np.float32))


def test_an_overlap_the_memory_budget_cannot_hold_is_refused(tiny_weights):
    """Round 17: tile_overlap=2000 planned 4002x4002 tiles whatever the budget: a 12 MP photo ran whole (about
    16 GB) with the default budget, without a word."""
    with pytest.raises(OptionError, match=r"tile_overlap=2000 needs tiles of at least 4002x4002 pixels, more than "
                                          r"the memory budget lets one pass take .*give a tile_overlap of at most"):
        Deblurrer(tiny_weights, tile_overlap=2000, memory_budget_mb=64)
    with Deblurrer(tiny_weights, tile_overlap=2000, memory_budget_mb=None) as unbounded:  # no budget: as asked
        assert unbounded.tile_for(300, 400) is None
    with Deblurrer(tiny_weights, memory_budget_mb=1) as tiny:  # the default overlap on a tiny budget: smallest tiles
        assert tiny.tile_for(300, 400) is not None


def test_a_compile_cache_that_is_a_file_is_refused(tmp_path):
    """Round 17: a file as compile_cache ran with the cache silently off (logged at INFO)."""
    (tmp_path / "afile").write_bytes(b"the user's file")
    with pytest.raises(OptionError, match="is a file, not a folder"):
        check_compile_cache(tmp_path / "afile")
    assert (tmp_path / "afile").read_bytes() == b"the user's file"
    assert check_compile_cache(tmp_path / "new") == tmp_path / "new"  # a folder to make: taken
