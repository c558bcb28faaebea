"""The runtime is thin: importing it (to run an .onnx or .engine) loads neither PyTorch nor onnx."""

import subprocess
import sys


def test_importing_the_runtime_loads_no_torch():
    code = ("import sys; from runtime import Deblurrer; import runtime.cli, runtime.images, runtime.tiling; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
