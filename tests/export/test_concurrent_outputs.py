"""Two runs writing the same output at once (audit, HIGH): the second is refused in one line naming the output, and
the first one finishes with its own file. Before, every run staged under the same ``<name>.partial.onnx`` and
cleared whatever was there, so the first run renamed the second one's graph over the output and reported success.

The first run is a real run in another process, held mid-way (its staged file written, its verification not yet
done) by a stand-in that waits for a line on stdin; killing it (SIGKILL: no cleanup) must not block the next run.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.hashing import file_sha256
from banet.metadata import read_onnx_metadata
from export import to_app, to_onnx
from tests.cli_helpers import refused

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--no-default-sweep", "--verify-sizes", "1x32x32", "-q"]


def _held(module: str, attribute: str, call: str) -> subprocess.Popen:
    """A process that runs ``call`` with ``module.attribute`` replaced by a stand-in that prints ``held`` and waits
    for a line on stdin before doing the real thing."""
    code = textwrap.dedent(f"""
        import sys
        import {module} as target
        real = target.{attribute}
        def held(*args, **kwargs):
            print("held", flush=True)
            sys.stdin.readline()
            return real(*args, **kwargs)
        target.{attribute} = held
        {call}
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if line != "held":
        process.kill()
        raise AssertionError(f"the first run did not get to its check: {line!r} {process.communicate()[1]}")
    return process


def _to_onnx(weights: Path, output: Path) -> str:
    """The code of a to_onnx run, for :func:`_held`."""
    args = ["--weights", str(weights), "--output", str(output), *FAST]
    return f"from export import to_onnx; sys.exit(to_onnx.main({args!r}))"


def _release(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate("\n", timeout=120)
    return process.returncode, out + err


@pytest.fixture
def two_weights(tmp_path, tiny_model) -> tuple[Path, Path]:
    """Two checkpoints of one tiny network that differ in one weight (as the audit's plain.pth / other.pth)."""
    plain = save_checkpoint(tiny_model, tmp_path / "plain.safetensors")
    with torch.no_grad():
        tiny_model.de_layer3[0].weight.mul_(1.5)
    other = save_checkpoint(tiny_model, tmp_path / "other.safetensors")
    return plain, other


def test_a_second_export_to_the_same_output_is_refused_and_the_first_keeps_its_weights(tmp_path, two_weights,
                                                                                          capsys):
    plain, other = two_weights
    output = tmp_path / "out" / "c.onnx"
    first = _held("export.onnx_export", "compare", _to_onnx(other, output))
    try:
        code = to_onnx.main(["--weights", str(plain), "--output", str(output), *FAST])
        refused(capsys, code, f"another run is writing {output}", f"pid {first.pid}")
    finally:
        returned, said = _release(first)
    assert returned == 0, said
    assert read_onnx_metadata(output).source_sha256 == file_sha256(other)  # its own weights, not the second run's
    assert sorted(p.name for p in output.parent.iterdir()) == ["c.onnx"]


def test_a_killed_export_does_not_block_the_next_one(tmp_path, two_weights, capsys):
    plain, other = two_weights
    output = tmp_path / "c.onnx"
    first = _held("export.onnx_export", "compare", _to_onnx(other, output))
    first.kill()  # SIGKILL mid-run: its staged file and lock file stay, its flock goes with it
    first.communicate()
    assert to_onnx.main(["--weights", str(plain), "--output", str(output), *FAST]) == 0, capsys.readouterr().err
    assert read_onnx_metadata(output).source_sha256 == file_sha256(plain)
    assert sorted(p.name for p in tmp_path.iterdir() if "c." in p.name) == ["c.onnx"]


def test_a_second_quantization_to_the_same_output_is_refused(tmp_path):
    from calibration.data import CalibrationSource
    from calibration.int8 import QuantizeError, quantize_int8
    from export.onnx_export import ExportOptions, export_onnx
    from tests.conftest import TINY

    torch.manual_seed(0)
    from banet.model import BANet

    fp32 = tmp_path / "tiny.onnx"
    export_onnx(BANet(TINY).eval(), fp32, ExportOptions(verify_shapes=[(1, 32, 32)]), "ab" * 32, "t.safetensors",
                TINY)
    output = tmp_path / "tiny_int8.onnx"
    call = ("from calibration.data import CalibrationSource; from calibration.int8 import quantize_int8; "
            f"quantize_int8({str(fp32)!r}, {str(output)!r}, CalibrationSource(count=2, size=(32, 32)), 'ort', "
            "verify_shapes=(), threads=1, heldout=False)")
    first = _held("calibration.int8", "_check_and_commit", call)
    try:
        with pytest.raises(QuantizeError, match=f"another run is writing {output}"):
            quantize_int8(fp32, output, CalibrationSource(count=2, size=(32, 32)), "trt", verify_shapes=(),
                          threads=1, heldout=False)
    finally:
        returned, said = _release(first)
    assert returned == 0, said
    assert read_onnx_metadata(output).extra["int8_flavour"] == "ort"  # the first run's file, whole
    assert sorted(p.name for p in tmp_path.iterdir() if "int8" in p.name) == ["tiny_int8.onnx"]


def test_a_second_app_graph_to_the_same_output_is_refused(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setattr("export.to_app.APP_SWEEP", ((1, 6, 10),))
    output = tmp_path / "app" / "tiny_app.onnx"
    args = ["--weights", str(tiny_weights), "--output", str(output), "--no-ort", "--tile", "0", "-q"]
    first = _held("export.app_check", "check_app_graphs",
                  f"from export import to_app; to_app.APP_SWEEP = ((1, 6, 10),); sys.exit(to_app.main({args!r}))")
    try:
        refused(capsys, to_app.main([*args, "--force"]), f"another run is writing {output}")
    finally:
        returned, said = _release(first)
    assert returned == 0, said
    assert sorted(p.name for p in output.parent.iterdir()) == ["tiny_app.onnx"]
