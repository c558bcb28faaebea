"""Shared fixtures: small seeded networks and checkpoints written in the layouts users hold.

The suite also runs in the thin install (``pip install '.[cpu,dev]'``: no torch, onnx or OpenCV). There, a test
module whose own imports need a missing extra is not collected, and the reason is printed at the end of the
run; fixtures that build networks skip their tests with the reason.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from pathlib import Path

import pytest

from banet.config import BANetConfig

TINY = BANetConfig(num_bams=2, dim_1=8, dim_2=16)
_THIN = importlib.util.find_spec("torch") is None
_NOT_COLLECTED: dict[str, str] = {}


def _missing_import(path: Path) -> str | None:
    """The first module-level import of ``path`` that fails here (a missing extra), or None."""
    for node in ast.parse(path.read_text()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                return f"{exc.name or name} is not installed"
    return None


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if not _THIN:
        return None
    if collection_path.is_dir() and (collection_path / "conftest.py").is_file():
        source = collection_path / "conftest.py"
    elif collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        source = collection_path
    else:
        return None
    missing = _missing_import(source)
    if missing:
        _NOT_COLLECTED[str(collection_path.relative_to(config.rootpath))] = missing
        return True
    return None


def pytest_terminal_summary(terminalreporter) -> None:
    if _NOT_COLLECTED:
        terminalreporter.section("not collected: needs an extra this install lacks (pip install '.[export]')")
        for name, why in sorted(_NOT_COLLECTED.items()):
            terminalreporter.write_line(f"{name}: {why}")


def _torch():
    return pytest.importorskip("torch", reason="building a network needs PyTorch: pip install '.[export]'")


# Every INT8 file is measured on the held-out photos when written (calibration.heldout); the suite writes dozens of
# small ones, including in session fixtures and subprocesses, so each is measured on 3 of the 26 (its record says 3).
os.environ.setdefault("BANET_HELDOUT_IMAGES", "3")
# ... and on OpenVINO with this CPU's int8 units only (each lesser unit class costs a process: tests/calibration/
# test_heldout.py measures one)
os.environ.setdefault("BANET_HELDOUT_UNITS", "here")


@pytest.fixture(autouse=True)
def _own_engines_folder(tmp_path_factory, monkeypatch):
    """Default artifact paths go to a folder of the test's own (banet.artifacts: else the checkout's engines/,
    which holds the main job's files); a test that sets $BANET_ENGINES itself overrides this."""
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path_factory.mktemp("engines")))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    if not _THIN:
        _torch().manual_seed(0)
    yield


@pytest.fixture
def tiny_model():
    torch = _torch()
    from banet.model import BANet

    torch.manual_seed(0)
    model = BANet(TINY).eval()
    # Random init leaves the residual branch tiny; scale the last layer so errors are not hidden by it.
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)
    return model


@pytest.fixture
def tiny_weights(tmp_path: Path, tiny_model) -> Path:
    from banet.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_fp32_and_int8(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny network's FP32 ONNX and its INT8 ``ort`` file next to it (quantized for real, held-out cost recorded);
    shared by the session: copy them before changing them."""
    import shutil

    torch = _torch()
    from banet.artifacts import int8_onnx_path
    from banet.checkpoint import save_checkpoint
    from banet.model import BANet
    from calibration.data import CalibrationSource
    from calibration.int8 import quantize_int8
    from export.checkpoint_onnx import onnx_for_checkpoint

    folder = tmp_path_factory.mktemp("tiny_fp32_and_int8")
    torch.manual_seed(0)
    weights = save_checkpoint(BANet(TINY).eval(), folder / "tiny.safetensors")
    fp32 = folder / "tiny.onnx"
    shutil.copy(onnx_for_checkpoint(weights), fp32)
    int8 = quantize_int8(fp32, int8_onnx_path(fp32, "ort"), CalibrationSource(count=2, size=(32, 32)), "ort",
                         verify_shapes=(), threads=1).path
    return fp32, int8


@pytest.fixture(scope="session")
def one_bam_onnx(tmp_path_factory) -> Path:
    """A one-BAM network's ONNX whose residual visibly changes an image (errors show): what the Triton repository
    tests serve, and any test that needs a real network ONNX."""
    torch = _torch()
    from banet.model import BANet
    from export.onnx_export import ExportOptions, export_onnx

    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval()
    with torch.no_grad():
        model.de_layer3[0].weight.mul_(10)
    path, _ = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                          ExportOptions(verify_shapes=[(1, 32, 32)]), "0" * 64, "tiny", model.config)
    return path
