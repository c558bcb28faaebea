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


@pytest.mark.parametrize("script", ["gpu_checks.sh", "gpu_train.sh"])
def test_gpu_scripts_stop_without_a_gpu(tmp_path, script):
    torch = pytest.importorskip("torch", reason="the GPU scripts run PyTorch: pip install '.[export]'")

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run its measurements or train")
    result = subprocess.run(["bash", str(ROOT / "scripts" / script), str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, "PY": sys.executable}, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU visible to PyTorch" in result.stdout + result.stderr
    assert "torch" in (tmp_path / "env.txt").read_text()  # the environment is recorded before stopping
    assert {p.name for p in tmp_path.iterdir()} <= {"env.txt", "log.txt"}  # nothing measured, grown or trained
