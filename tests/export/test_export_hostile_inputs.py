"""Robustness round 3 of export/to_onnx.py and export/build_trt.py: checkpoints that are nearly right, a --report
that would overwrite what the user gave, names at the file-system limit, options that contradict each other or
cannot be meant, engine manifests edited by hand, and Ctrl-C. Every refusal is one ``error:`` line (exit 1, or 2
for a contradicting command line) before any work, and nothing a user gave is changed.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.manifest import manifest_path
from banet.model import BANet
from export import build_trt, onnx_export, to_onnx
from export.onnx_export import ExportOptions, export_onnx
from export.trt import engine_files
from export.trt.builder import BUILD_INTERRUPTED, build_stop, deferred_interrupt
from tests.cli_helpers import refused
from tests.manifest_helpers import make_manifest

ROOT = Path(__file__).resolve().parents[2]
TINY = BANetConfig(num_bams=1, dim_1=8, dim_2=16)
FAST = ["--no-default-sweep", "--verify-sizes", "1x32x32", "-q"]
PROFILE = ["--min", "64x64", "--opt", "64x64", "--max", "1x128x128"]


@pytest.fixture(scope="module")
def net() -> BANet:
    torch.manual_seed(0)
    return BANet(TINY).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, net) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(net, path, ExportOptions(verify_shapes=[(1, 64, 64)]), "ab" * 32, "tiny.safetensors", TINY)
    return path


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- checkpoints that load but are not trained weights -------------------------------------------------------------
def _bad_checkpoint(folder: Path, net: BANet, kind: str) -> Path:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in net.state_dict().items()}
    if kind == "int32 safetensors":  # every tensor integer: loaded, cast to float, exported and "verified" before
        path = folder / "ints.safetensors"
        save_file({k: (v * 100).to(torch.int32) for k, v in state.items()}, str(path))
        return path
    path = folder / f"{kind.replace(' ', '_')}.pth"
    if kind == "bool tensor":
        state["en_layer1.0.weight"] = state["en_layer1.0.weight"] > 0
    elif kind == "nan weight":
        state["en_layer1.0.weight"][0, 0, 0, 0] = float("nan")
    elif kind == "integer keys":
        state = {1: torch.zeros(1), **state}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("int32 safetensors", "40 tensor(s) are not floating point"),
    ("bool tensor", "en_layer1.0.weight (bool)"),
    ("nan weight", "hold NaN or Inf values"),
    ("integer keys", "keys that are not parameter names: 1"),
])
def test_weights_that_are_not_trained_floats_are_refused(tmp_path, net, capsys, kind, message):
    """Before: int32/bool tensors were cast by load_state_dict and exported with exit 0; NaN weights failed as "the
    graph does not match PyTorch"; integer keys crashed in banet.checkpoint with a TypeError traceback."""
    weights = _bad_checkpoint(tmp_path, net, kind)
    out = tmp_path / "out"
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(out / "x.onnx"), *FAST]), message)
    assert not out.exists()


def test_weights_saved_in_half_or_double_precision_still_export(tmp_path, net):
    from safetensors.torch import save_file

    weights = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in net.state_dict().items()}, str(weights))
    assert to_onnx.main(["--weights", str(weights), "--output", str(tmp_path / "h.onnx"), *FAST]) == 0


# -- --report and --output -----------------------------------------------------------------------------------------
@pytest.fixture
def weights(tmp_path, net) -> Path:
    return save_checkpoint(net, tmp_path / "tiny.safetensors")


def test_report_never_overwrites_what_the_user_gave(tmp_path, weights, capsys, monkeypatch):
    """Before: --report replaced any existing file without --force, even the checkpoint (--report my.safetensors)
    or the ONNX just written (--report x.onnx left a JSON file under the ONNX's name, exit 0)."""
    monkeypatch.setattr(to_onnx, "load_checkpoint", lambda path: pytest.fail("the export started"))
    mine = tmp_path / "notes.json"
    mine.write_text("the user's notes")
    before = listing(tmp_path)
    output = tmp_path / "x.onnx"
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(output), "--report", str(mine)]),
            "notes.json exists; pass --force")
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(output), "--report", str(weights),
                                  "--force"]), "is the checkpoint (--weights)")
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(output), "--report", str(output),
                                  "--force"]), "is the ONNX file")
    assert listing(tmp_path) == before


def test_output_must_be_an_onnx_file_name(tmp_path, weights, capsys):
    """Before: --output model (or --output my.pth --force) was written as an ONNX the runtime cannot pick up."""
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(tmp_path / "model"), *FAST]),
            "ONNX files end in .onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_output_names_at_the_file_system_limit(tmp_path, weights, capsys):
    """A 255-byte name is valid: before, its staged name (<stem>.partial.onnx) was too long and the export died with
    an OSError traceback. One byte more is refused in one line."""
    longest = tmp_path / ("x" * 250 + ".onnx")
    assert to_onnx.main(["--weights", str(weights), "--output", str(longest), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.safetensors", longest.name])
    capsys.readouterr()
    too_long = tmp_path / ("y" * 251 + ".onnx")
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(too_long), *FAST]), "name too long")


# -- options -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--no-default-sweep", "--verify-sizes", "0x32x32"], "verification shape 0x32x32: batch"),
    (["--no-default-sweep", "--verify-sizes", "1x32x32", "--min-psnr", "nan"], "--min-psnr must be a finite"),
    (["--no-default-sweep", "--verify-sizes", "1x32x32", "--max-abs-error", "-1"], "--max-abs-error must be >= 0"),
    (["--static", "8192x64"], "larger than --max-size 4096"),
])
def test_options_that_cannot_be_meant_are_refused_before_exporting(tmp_path, weights, capsys, args, message):
    """Before: a batch of 0 failed after the export with a ValueError traceback (its .partial.onnx left behind), NaN
    or negative thresholds failed a perfect graph, and --static 8192x64 traced and verified at full size."""
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(tmp_path / "x.onnx"), *args]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_static_with_a_verification_sweep_contradicts(tmp_path, weights, capsys):
    """Before: the --verify-sizes of a --static export were silently ignored."""
    code = to_onnx.main(["--weights", str(weights), "--output", str(tmp_path / "x.onnx"), "--static", "32x32",
                         "--verify-sizes", "1x64x64"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--static exports are verified at their own shape" in err


def test_ctrl_c_during_an_export_leaves_nothing(tmp_path, weights, capsys, monkeypatch):
    """Before: Ctrl-C printed a traceback and left <name>.partial.onnx (7.6 MB for the default model) behind."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "compare", interrupted)
    out = tmp_path / "out"
    assert to_onnx.main(["--weights", str(weights), "--output", str(out / "x.onnx"), *FAST]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == f"interrupted (Ctrl-C): nothing written to {out / 'x.onnx'}"
    assert list(out.iterdir()) == []


# -- build_trt.py --------------------------------------------------------------------------------------------------
def build_args(onnx: Path, engine: Path, *extra: str) -> list[str]:
    return ["--runtime", "tensorrt-rtx", "--onnx", str(onnx), "--output", str(engine), "-q", *PROFILE, *extra]


@pytest.mark.parametrize("extra, message", [
    (["--workspace", "99999999999999"], "--workspace must be a positive number of MiB up to"),
    (["--min-psnr", "nan"], "--min-psnr must be a finite number"),
])
def test_build_numbers_that_cannot_be_meant(tmp_path, tiny_onnx, capsys, extra, message):
    """Before: a --workspace of a few digits too many died in TensorRT's bindings with a TypeError traceback after
    parsing; --min-psnr nan failed every drift check."""
    refused(capsys, build_trt.main(build_args(tiny_onnx, tmp_path / "x.engine", *extra)), message)
    assert list(tmp_path.iterdir()) == []


def test_build_engine_name_too_long_is_one_line(tmp_path, tiny_onnx, capsys):
    """Before: an OSError traceback from the output check."""
    engine = tmp_path / ("x" * 250 + ".engine")
    refused(capsys, build_trt.main(build_args(tiny_onnx, engine, "--dry-run")), "File name too long")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def measured(tmp_path) -> Path:
    engine = tmp_path / "tiny_fp16.engine"
    engine.write_bytes(b"engine")
    make_manifest(runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None,
                  drift={"worst_psnr_db": 47.5, "passed": True}).write(manifest_path(engine))
    return engine


def test_check_refuses_build_options(measured, capsys):
    """Before: --check ignored every build option; with --dry-run it would still record a drift in the manifest."""
    before = listing(measured.parent)
    for extra, named in ((["--dry-run"], "--dry-run"), (["--fp16", "--output", "y.engine"], "--fp16, --output")):
        code = build_trt.main(["--check", str(measured), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and named in err and "Traceback" not in err
    assert listing(measured.parent) == before


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["metadata"].update({"banet.source_name": 5}), "metadata (expected text values)"),
    (lambda m: m["metadata"].update({"banet.source_sha256": 5}), "metadata (expected text values)"),
    (lambda m: m["profiles"][0].update(min="1x3x64x64"), "profiles[0]"),
    (lambda m: m.update(targets=[75]), "targets (expected names such as sm75)"),
    (lambda m: m.update(runtime=["tensorrt"]), "malformed manifest"),
    (lambda m: m.update(precision="int4"), "precision 'int4'"),
])
def test_check_refuses_a_manifest_edited_by_hand(measured, capsys, edit, message):
    """Before: TypeError tracebacks (a number where the reader wants text, a list as the runtime), or, past the GPU
    check, in the middle of a measurement."""
    path = manifest_path(measured)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    before = listing(measured.parent)
    refused(capsys, build_trt.main(["--check", str(measured)]), message)
    assert listing(measured.parent) == before


@pytest.fixture
def ctrl_c_handled():
    """SIGINT handled as in a terminal (Python's KeyboardInterrupt), whatever this process inherited: a test run
    started in the background (``cmd &``) inherits it ignored."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def _ctrl_c_as_in_a_terminal() -> None:
    """In a child process, before it runs Python: SIGINT back to the default, so Python raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_deferred_interrupt_leaves_an_ignored_ctrl_c_ignored():
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's, or nohup's
    try:
        with deferred_interrupt() as interrupted:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and not interrupted.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_deferred_interrupt_holds_ctrl_c_until_tensorrt_returns(ctrl_c_handled):
    previous = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as interrupted:
        # the handler installed for SIGINT, called as the interpreter would on Ctrl-C (a real signal sent to this
        # pytest process crashed it once ONNX Runtime, OpenVINO and TensorRT for RTX were all loaded; the real
        # signal is sent to a build in a child process below): no KeyboardInterrupt, the event set
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert interrupted.is_set() and BUILD_INTERRUPTED.is_set()
    assert signal.getsignal(signal.SIGINT) is previous


def test_deferred_interrupt_holds_sigterm_where_the_command_turns_it_into_a_stop():
    """SIGTERM under @stoppable (runtime.stop_signals) is held like Ctrl-C, and raised as Terminated (exit 143)."""
    from runtime.stop_signals import Terminated, stop_signals_as_interrupts

    inherited = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with stop_signals_as_interrupts(), deferred_interrupt() as interrupted:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # as the interpreter calls it
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # a later Ctrl-C does not change what stopped it
            assert interrupted.is_set()
            stop = build_stop()
            assert isinstance(stop, Terminated) and stop.exit_status == 143
        with deferred_interrupt():  # not stoppable: SIGTERM keeps its default action
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, inherited)


@pytest.mark.parametrize("sent, status, line", [
    ("SIGINT", 130, "interrupted (Ctrl-C): no engine or manifest was changed"),
    ("SIGTERM", 143, "terminated (SIGTERM): no engine or manifest was changed"),
])
def test_a_stop_during_a_real_build_keeps_the_old_pair(tmp_path, tiny_onnx, sent, status, line):
    """Ctrl-C or SIGTERM while TensorRT for RTX builds (sent when the first build phase starts). Before: TensorRT
    swallowed the KeyboardInterrupt ("Exception caught in log()"), the build went on and --force replaced the
    engine, exit 0 (SIGTERM: until 2026-12-06). Now the build is cancelled, the old pair stays byte for byte, no
    lock or staged file is left, exit 130 (143)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (pip install '.[rtx]')")
    engine = tmp_path / "tiny.engine"
    args = build_args(tiny_onnx, engine)
    assert build_trt.main(args) == 0
    before = listing(tmp_path)
    script = (
        "import os, runpy, signal, sys\n"
        "import export.trt.builder as builder\n"
        f"sys.argv = ['export/build_trt.py', *{[a for a in args if a != '-q'] + ['--force']!r}]\n"  # progress on
        "real = builder.make_progress_monitor\n"
        "def monitor(trt, stream=None):\n"
        "    m = real(trt, stream)\n"
        "    start = m.phase_start\n"
        "    def phase_start(*a):\n"
        "        if not getattr(m, 'sent', False):\n"
        "            m.sent = True\n"
        f"            os.kill(os.getpid(), signal.{sent})\n"
        "        start(*a)\n"
        "    m.phase_start = phase_start\n"
        "    return m\n"
        "builder.make_progress_monitor = monitor\n"
        "runpy.run_path('export/build_trt.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "Exception caught" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == line
    assert listing(tmp_path) == before


def test_a_manifest_checked_by_check_engine_is_the_one_read(measured):
    assert engine_files.checked_manifest(measured).drift == {"worst_psnr_db": 47.5, "passed": True}


@pytest.mark.parametrize("cache, message", [
    ("onnx", "is the ONNX the engine is built from"),
    ("engine", "is the engine (--output)"),
    ("manifest", "is the engine's manifest"),
])
def test_a_cache_path_never_names_the_build_s_own_files(tmp_path, tiny_onnx, capsys, cache, message):
    """TensorRT reads and rewrites --timing-cache / --calibration-cache in place: before, nothing kept a typo from
    naming the ONNX or the engine, which the build would have overwritten with cache bytes."""
    engine = tmp_path / "x.engine"
    path = {"onnx": tiny_onnx, "engine": engine, "manifest": tmp_path / "x.json"}[cache]
    for option in ("--timing-cache", "--calibration-cache"):
        extra = ["--int8", "--calibrate"] if option == "--calibration-cache" else []
        args = ["--runtime", "tensorrt", "--onnx", str(tiny_onnx), "--output", str(engine), "-q", *PROFILE, *extra,
                option, str(path), "--dry-run"]
        refused(capsys, build_trt.main(args), f"{option} {path} {message}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [["--calibration-cache", "my.calib"], ["--calibration-shape", "1x720x1280"]])
def test_calibration_options_without_calibrate(tmp_path, tiny_onnx, capsys, extra):
    """Before: silently ignored (no --calibrate: nothing is calibrated)."""
    refused(capsys, build_trt.main(build_args(tiny_onnx, tmp_path / "x.engine", *extra, "--dry-run")),
            "without it they would be ignored")
    assert list(tmp_path.iterdir()) == []


def test_a_link_planted_at_the_staging_name_is_never_written_through(tmp_path, weights, capsys):
    """Before: the exporter opened <name>.partial.onnx as it found it: a symbolic link planted there had its target
    overwritten with the ONNX, and was then renamed over the output (the output became a link to that file)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.partial.onnx").symlink_to(victim)
    assert to_onnx.main(["--weights", str(weights), "--output", str(out / "x.onnx"), *FAST]) == 0
    assert victim.read_text() == "not yours"
    assert not (out / "x.onnx").is_symlink() and sorted(p.name for p in out.iterdir()) == ["x.onnx"]
    capsys.readouterr()
    (out / "y.partial.onnx").mkdir()  # a folder in the way is refused, never removed
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(out / "y.onnx"), *FAST]),
            "a folder is in the way of the temporary file")
    assert (out / "y.partial.onnx").is_dir() and not (out / "y.onnx").exists()


def test_an_onnx_of_other_weights_than_weights_is_refused(tmp_path, tiny_onnx, weights, capsys):
    """--onnx of one model with --weights of another: the engine was named after --weights (mymodel_fp32.engine)
    and built from the other ONNX, its manifest naming that ONNX's source, exit 0 (dry run: "ready to build")."""
    out = tmp_path / "out"
    out.mkdir()
    for extra in (["--dry-run"], []):
        refused(capsys, build_trt.main(build_args(tiny_onnx, out / "x.engine", "--weights", str(weights), *extra)),
                "was exported from other weights than")
    assert list(out.iterdir()) == []
