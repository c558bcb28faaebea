"""A non-editable install (``pip install .``) runs the README's main job from an empty folder and writes every
artifact under that folder, never into site-packages (issue 15).

The fresh venv borrows the dependencies of the running one through a ``.pth`` line (so the test does not
download torch again); banet-deploy itself is built as a wheel and installed into the new venv's site-packages,
and only its console scripts are used.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("banet", "runtime", "export", "calibration", "training", "benchmarks", "serving")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for package in PACKAGES for p in sorted((folder / package).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("tensorrt_rtx", reason="the main job builds a TensorRT for RTX engine (the rtx extra)")
    work = tmp_path_factory.mktemp("install")
    source = work / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    venv = work / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv, site


def test_the_main_job_from_an_empty_folder_writes_only_there(installed, tmp_path):
    venv, site = installed
    before = digest(site)
    assert before, "the wheel installed none of the packages"
    assert "banet/weights/banet_default.onnx" in before  # the default model runs without torch (package data)
    app = tmp_path / "app"
    app.mkdir()
    commands = [["banet-export-onnx", "--force"],
                ["banet-build-trt", "--fp16", "--runtime", "tensorrt-rtx", "--target", "sm75", "--force"],
                ["banet-evaluate", "--limit", "4"]]
    env = {k: v for k, v in os.environ.items() if k != "BANET_ENGINES"}  # the rule for an installed package
    for command in commands:
        done = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=app, capture_output=True,
                              text=True, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    made = sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_file())
    for expected in ("engines/banet_default.onnx", "engines/banet_default_fp16.onnx",
                     "engines/banet_default_fp16_sm75.engine", "engines/banet_default_fp16_sm75.json",
                     "out/eval/metrics.json"):
        assert expected in made, made
    assert digest(site) == before, "the main job wrote into site-packages"
    imported_from = subprocess.run([str(venv / "bin" / "python"), "-c", "import runtime; print(runtime.__file__)"],
                                   cwd=app, capture_output=True, text=True, check=True).stdout
    assert imported_from.startswith(str(site))
