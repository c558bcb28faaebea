"""The runtime is thin: importing it (to run an .onnx or .engine) loads neither PyTorch nor onnx."""

import subprocess
import sys


def test_importing_the_runtime_loads_no_torch():
    code = ("import sys; from runtime import Deblurrer; import runtime.cli, runtime.images, runtime.tiling; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_running_an_onnx_imports_nothing_above_the_runtime(tiny_weights, tmp_path):
    """Deblurrer on an .onnx in the full install: torch, onnx and the export/precision/top layers stay unloaded."""
    from export.checkpoint_onnx import onnx_for_checkpoint

    model = onnx_for_checkpoint(tiny_weights)
    code = ("import sys, numpy as np; from runtime import Deblurrer; "
            f"d = Deblurrer({str(model)!r}); out = d(np.zeros((40, 30, 3), np.uint8)); "
            "assert out.shape == (40, 30, 3); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnx', 'export', 'calibration', "
            "'training', 'benchmarks', 'skimage', 'safetensors'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_package_itself_loads_nothing_until_a_name_is_used():
    """Round 17: ``python -m runtime`` imports this package before its ``__main__`` guards Ctrl-C; the package
    imported NumPy and the Deblurrer (0.2 s), so a Ctrl-C then was a KeyboardInterrupt traceback."""
    code = ("import sys, runtime; before = 'numpy' in sys.modules or 'runtime.deblurrer' in sys.modules; "
            "from runtime import Deblurrer, OptionError; print(before, Deblurrer.__name__, OptionError.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "Deblurrer", "OptionError"], done.stdout + done.stderr
