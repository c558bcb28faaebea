"""The shell scripts in scripts/: they parse, and the GPU checks refuse loudly where there is no GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_gpu_checks_stop_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch", reason="the GPU checks run PyTorch: pip install '.[export]'")

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run its measurements")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_checks.sh"), str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, "PY": sys.executable}, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU visible to PyTorch" in result.stderr
    assert "torch" in (tmp_path / "env.txt").read_text()  # the environment is recorded before stopping


def test_gpu_training_stops_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch", reason="GPU training runs PyTorch: pip install '.[export]'")

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would train")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, "PY": sys.executable}, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU visible to PyTorch" in (tmp_path / "log.txt").read_text()
    assert not (tmp_path / "start.safetensors").exists()  # nothing grown or trained
