"""Deblurrer: backends agree, every input form round-trips, bad input is refused, memory stays flat."""

import gc
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from banet.processing import ImageFormatError
from runtime import Deblurrer, ImageReadError, ModelNotFoundError
from runtime.images import read_image

REPO = Path(__file__).resolve().parents[2]


def _psnr(a, b, peak):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def _photo(h, w, seed=0):
    from export.parity import photo_batch

    x = photo_batch(1, h, w, seed=seed)[0].transpose(1, 2, 0) + 0.5  # BGR [0, 1]
    return x.astype(np.float32)


@pytest.mark.parametrize("make, peak", [
    (lambda: (_photo(333, 517) * 255).round().astype(np.uint8), 255),
    (lambda: (_photo(120, 90) * 65535).round().astype(np.uint16), 65535),
    (lambda: _photo(77, 131), 1.0),
    (lambda: (_photo(64, 81)[..., 0] * 255).astype(np.uint8), 255),                 # greyscale HxW
    (lambda: (_photo(40, 58)[..., :1] * 255).astype(np.uint8), 255),                # greyscale HxWx1
    (lambda: np.concatenate([(_photo(51, 70) * 255).astype(np.uint8),
                             np.full((51, 70, 1), 200, np.uint8)], axis=2), 255),   # BGRA
])
def test_backends_agree_and_preserve_form(pair, make, peak):
    torch_d, ort_d = pair
    image = make()
    a, b = torch_d(image), ort_d(image)
    assert a.shape == image.shape and a.dtype == image.dtype
    assert b.shape == image.shape and b.dtype == image.dtype
    assert _psnr(a, b, peak) >= 60
    if image.ndim == 3 and image.shape[2] == 4:
        np.testing.assert_array_equal(a[..., 3], image[..., 3])
    assert not np.array_equal(a, image), "the network must change the image"


def test_mixed_size_batch_matches_single_calls(pair):
    torch_d, ort_d = pair
    images = [(_photo(h, w, seed=i) * 255).astype(np.uint8) for i, (h, w) in
              enumerate([(33, 47), (64, 64), (33, 47), (20, 98)])]
    batch_torch, batch_ort = torch_d.deblur_batch(images), ort_d.deblur_batch(images)
    for image, bt, bo in zip(images, batch_torch, batch_ort):
        assert bt.shape == image.shape
        assert _psnr(bt, bo, 255) >= 60
        np.testing.assert_array_equal(bt, torch_d(image))


def test_rgb_switch_and_pil_images(tiny_weights):
    bgr = (_photo(48, 64) * 255).astype(np.uint8)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    with Deblurrer(tiny_weights) as d:
        from_bgr = d(bgr)
        np.testing.assert_array_equal(d(rgb, rgb=True), from_bgr[..., ::-1])
        pil = d(Image.fromarray(rgb))
        assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (64, 48)
        np.testing.assert_array_equal(np.asarray(pil), from_bgr[..., ::-1])
        grey = d(Image.fromarray(rgb).convert("L"))
        assert grey.mode == "L"


def test_default_model_loads_without_arguments():
    pytest.importorskip("torch", reason="the embedded default is a checkpoint: pip install '.[export]'")
    with Deblurrer() as d:
        out = d(np.full((10, 12, 3), 128, np.uint8))
    assert out.shape == (10, 12, 3)


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((0, 5, 3), np.uint8), ImageFormatError, "empty"),
    (np.zeros((1, 1, 3), np.uint8), ImageFormatError, "too small"),
    (np.zeros((1, 40, 3), np.uint8), ImageFormatError, "too small"),
    (np.zeros((4, 4, 3, 2), np.uint8), ImageFormatError, "4 dimensions"),
    (np.zeros((8,), np.uint8), ImageFormatError, "1 dimensions"),
    (np.zeros((8, 8, 2), np.uint8), ImageFormatError, "got shape"),
    (np.full((8, 8, 3), np.nan, np.float32), ImageFormatError, "NaN"),
    (np.full((8, 8, 3), 2.0, np.float32), ImageFormatError, r"\[0, 1\]"),
    (np.zeros((8, 8, 3), np.int64), ImageFormatError, "dtype"),
    ([[1, 2], [3, 4]], ImageFormatError, "numpy array or a PIL image"),
])
def test_bad_images_get_specific_errors(tiny_weights, bad, error, message):
    with Deblurrer(tiny_weights) as d, pytest.raises(error, match=message):
        d(bad)


def test_missing_model_and_bad_image_files(tmp_path, tiny_weights):
    with pytest.raises(ModelNotFoundError, match=r"model file not found \(export one: python export/to_onnx.py "
                                                  r"--weights CHECKPOINT --output .*nope.onnx\)"):
        Deblurrer(tmp_path / "nope.onnx")
    with pytest.raises(ModelNotFoundError, match=r"not found \(build one: python export/build_trt.py --fp16"):
        Deblurrer(tmp_path / "nope.engine")
    with pytest.raises(ImageReadError, match="image file not found"):
        read_image(tmp_path / "nope.png")
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image OpenCV can decode"):
        read_image(fake)
    odd = tmp_path / "weights.xyz"
    odd.write_bytes(tiny_weights.read_bytes())
    with pytest.raises(ValueError, match="cannot tell the backend"):
        Deblurrer(odd)


def test_closed_deblurrer_refuses(tiny_weights):
    d = Deblurrer(tiny_weights)
    d.close()
    d.close()
    with pytest.raises(RuntimeError, match="closed"):
        d(np.zeros((8, 8, 3), np.uint8))


def test_thread_safe(pair):
    _, ort_d = pair
    images = [(_photo(40 + 2 * i, 50, seed=i) * 255).astype(np.uint8) for i in range(6)]
    expected = [ort_d(img) for img in images]
    results, errors = [None] * 6, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = ort_d(images[i])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 1e6


def test_memory_is_flat_over_200_calls(pair):
    _, ort_d = pair
    image = (_photo(96, 128) * 255).astype(np.uint8)
    for _ in range(20):
        ort_d(image)
    gc.collect()
    before = _rss_mb()
    for _ in range(200):
        ort_d(image)
    gc.collect()
    growth = _rss_mb() - before
    assert growth < 20, f"resident memory grew by {growth:.1f} MB over 200 calls"


def test_readme_example_runs_as_written(tmp_path):
    for module in ("torch", "cv2", "skimage"):
        pytest.importorskip(module, reason="the example runs the default checkpoint on OpenCV and scikit-image: "
                                           "pip install '.[export]'")
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- embed-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README lacks the embedding example"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 10
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sharp.png").exists()


def test_non_finite_network_output_is_an_error_not_an_image(tmp_path, tiny_model):
    import torch

    from banet.checkpoint import save_checkpoint
    from banet.processing import NonFiniteOutputError

    with torch.no_grad():  # finite weights whose products overflow (what an FP16 overflow looks like downstream;
        tiny_model.BAM_1.final_conv.weight.fill_(3e38)  # Inf or NaN weights are refused when the file is loaded)
    weights = save_checkpoint(tiny_model, tmp_path / "overflow.safetensors")
    with Deblurrer(weights) as d, pytest.raises(NonFiniteOutputError, match="NaN or Inf"):
        d(np.full((16, 16, 3), 100, np.uint8))


def test_engine_without_tensorrt_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from runtime import BackendUnavailableError

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name in ("tensorrt", "tensorrt_rtx", "runtime.backends.tensorrt"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        Deblurrer(engine)
