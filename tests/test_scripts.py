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
                            text=True, env={**os.environ, "PY": sys.executable, "CPU_OK": "0"}, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU visible to PyTorch" in result.stdout + result.stderr
    assert "torch" in (tmp_path / "env.txt").read_text()  # the environment is recorded before stopping
    assert {p.name for p in tmp_path.iterdir()} <= {"env.txt", "log.txt"}  # nothing measured, grown or trained


def test_gpu_checks_records_every_phase_even_when_none_can_run(tmp_path):
    """With the time budget already spent, each phase is named as skipped in summary.txt and the script says so
    in its exit status, instead of stopping at the first one (the phase bookkeeping, without measuring)."""
    pytest.importorskip("torch", reason="the GPU checks run PyTorch: pip install '.[export]'")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_checks.sh"), str(tmp_path)], capture_output=True,
                            text=True, env={**os.environ, "PY": sys.executable, "CPU_OK": "1", "BUDGET_S": "0"},
                            timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary[:-1]] == ["roofline", "drift", "bench", "compile"]
    assert all("skipped (budget of 0 s spent)" in line for line in summary[:-1])
    assert summary[-1].startswith("total ") and "torch" in (tmp_path / "env.txt").read_text()
