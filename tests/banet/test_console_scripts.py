"""Every console script of the package, started where a package it needs is missing (a thin install: no torch, no
onnx), says so in one line naming the extra to install, never a traceback (round 17)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

#: Run before the script: imports of torch and onnx fail as in an install without the export extra.
_THIN = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx'):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Missing())
"""


@pytest.mark.parametrize("script", ["banet-export-onnx", "banet-export-app", "banet-build-trt", "banet-quantize",
                                    "banet-drift", "banet-evaluate", "banet-train", "banet-benchmark"])
def test_a_console_script_without_its_packages_is_one_line(script):
    """Eight of the twelve ended in "ModuleNotFoundError: No module named 'torch'" tracebacks in the thin install:
    the guard answered only under ``python -m`` (``__main__``), and five modules had none."""
    module, function = SCRIPTS[script].split(":")
    code = _THIN + f"sys.argv = [{script!r}, '--help']\nfrom {module} import {function}\nsys.exit({function}())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert re.search(r"needs the Python package '(torch|onnx)'.*pip install", line), line


def test_imported_by_a_program_the_error_is_raised():
    """A program importing the module (not a command) gets the ModuleNotFoundError itself, to handle."""
    code = _THIN + "sys.argv = ['my_app.py']\ntry:\n    import training.train\nexcept ModuleNotFoundError:\n" \
                   "    print('raised')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "raised", done.stderr[-2000:]
