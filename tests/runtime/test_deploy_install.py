"""The thin deploy install (``pip install '.[cpu]'``, no torch): a fresh venv runs an exported ONNX of the default
model on a real photo through ``Deblurrer`` and the command line, and ``Deblurrer()`` runs the embedded default
model from its shipped ONNX, never importing torch, onnx or OpenCV, and gives the pixels the full install gives
(``scripts/deploy_check.sh`` does the work; README numbers come from it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deploy_run(tmp_path_factory):
    pytest.importorskip("skimage", reason="the test photo comes from scikit-image: pip install '.[export]'")
    from skimage import data

    from banet.defaults import DEFAULT_ONNX

    work = tmp_path_factory.mktemp("deploy")
    model = DEFAULT_ONNX  # the default model's ONNX as the package ships it (tests/banet/test_default_onnx.py)
    photo = work / "coffee.png"
    Image.fromarray(data.coffee()[::2, ::2]).save(photo)  # 200x300: odd aspect ratio, a real photo
    base_python = getattr(sys, "_base_executable", None) or "python3"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "deploy_check.sh"), str(model), str(photo),
                             str(work / "env")], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHON": base_python})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"deploy check printed no report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1]), result.returncode, model, photo, work / "env"


def test_deploy_install_has_no_torch_onnx_or_opencv(deploy_run):
    report, code, *_ = deploy_run
    assert report["installed"] == {"torch": False, "onnx": False, "cv2": False, "onnxruntime": True}
    assert report["imported"] == []
    assert code == 0, report


def test_deploy_install_runs_from_site_packages_and_the_cli_writes_into_the_app_folder(deploy_run):
    report, _, _, _, env = deploy_run
    assert "site-packages" in report["runtime_from"] and not report["runtime_from"].startswith(str(ROOT))
    assert report["cli_exit"] == 0 and report["cli_output"] == str((env / "app" / "cli_out" / "coffee.png").resolve())


def test_deploy_install_gives_the_full_install_pixels(deploy_run):
    from runtime import Deblurrer

    report, _, model, photo, env = deploy_run
    image = np.asarray(Image.open(photo).convert("RGB"))
    with Deblurrer(model, rgb=True) as deblur:
        expected = deblur(image)
    thin = np.load(env / "app" / "api_output.npy")
    assert np.abs(thin.astype(int) - expected).max() <= 1
    cli = np.asarray(Image.open(report["cli_output"]).convert("RGB"))  # written BGR by Pillow -> read back as RGB
    assert np.abs(cli.astype(int) - expected).max() <= 1


def test_deploy_install_runs_the_embedded_default_without_torch(deploy_run):
    """``Deblurrer()`` with no model in the thin install: the shipped ONNX on ONNX Runtime, the same pixels."""
    from runtime import Deblurrer

    report, code, model, photo, env = deploy_run
    assert code == 0 and "onnx" in report["default_backend"].lower(), report
    image = np.asarray(Image.open(photo).convert("RGB"))
    with Deblurrer(model, rgb=True) as deblur:
        expected = deblur(image)
    thin = np.load(env / "app" / "default_output.npy")
    assert thin.shape == image.shape and np.abs(thin.astype(int) - expected).max() <= 1
    assert not np.array_equal(thin, image)  # it ran the network, not a copy


def test_deploy_install_refuses_a_checkpoint_in_one_line_naming_the_cpu_torch_install(deploy_run):
    report, *_ = deploy_run
    error = report["checkpoint_error"]
    assert error and error["type"] == "BackendUnavailableError" and not error["chained"], error
    assert "\n" not in error["message"]
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in error["message"]
