"""Real inputs must not break export/build_trt.py or export/to_onnx.py (issue 14).

* The engine and its manifest are replaced together: at every instant of a ``--force`` rebuild the pair on disk
  reads as the old pair or the new one, and the next build clears what a killed one left.
* ``--check`` fails in one line when it cannot measure, and never erases an earlier measurement.
* A full disk is one line, leaves no partial file and the old pair intact.
* Every missing, foreign, truncated or misplaced input path is refused in one line, before any work, and never
  created: exit 1, ``error:``, no traceback.

Most builds here use a stand-in for the TensorRT builder (bytes, no engine): what is tested is the file handling
around it. The real builds (TensorRT for RTX, no GPU needed) are the subprocess runs at the end.
"""

import errno
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import banet.outputs
from banet.checkpoint import save_checkpoint
from banet.config import BANetConfig
from banet.manifest import ManifestError, manifest_path, read_manifest
from banet.model import BANet
from export import build_trt, to_onnx, trt_build
from export.onnx_export import ExportOptions, export_onnx
from export.trt import engine_files
from tests.cli_helpers import refused
from tests.full_disk import FullDisk
from tests.manifest_helpers import make_manifest

ROOT = Path(__file__).resolve().parents[2]
TINY = BANetConfig(num_bams=1, dim_1=8, dim_2=16)
PROFILE = ["--min", "64x64", "--opt", "64x64", "--max", "1x128x128"]
RANDOM_BYTES = random.Random(0).randbytes(4096)


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny FP32 export, its FP16 export, and the kinds of bad file users hand over."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = BANet(TINY).eval()
    out = {}
    for precision, name in (("fp32", "tiny.onnx"), ("fp16", "tiny_fp16.onnx")):
        out[precision] = folder / name
        export_onnx(model, out[precision], ExportOptions(precision=precision, verify_shapes=[(1, 64, 64)]),
                    "ab" * 32, "tiny.safetensors", TINY)
    data = out["fp32"].read_bytes()
    out["truncated"] = folder / "truncated.onnx"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["random"] = folder / "random.onnx"
    out["random"].write_bytes(RANDOM_BYTES)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "foreign",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    foreign = helper.make_model(graph)
    out["foreign"] = folder / "foreign.onnx"
    onnx.save(foreign, str(out["foreign"]))
    ours = onnx.load(str(out["fp32"]), load_external_data=False)
    foreign.metadata_props.extend(ours.metadata_props)  # our metadata pasted onto another graph
    out["disguised"] = folder / "disguised.onnx"
    onnx.save(foreign, str(out["disguised"]))
    out["folder"] = folder / "a_folder.onnx"
    out["folder"].mkdir()
    out["weights"] = save_checkpoint(model, folder / "tiny.safetensors")
    return out


@pytest.fixture
def fake_builder(monkeypatch):
    """TensorRT's builder replaced by a stand-in that returns new bytes on every call (NOT an engine), no GPU."""
    counter = itertools.count()

    def build_serialized(plan, trt, calibration_batches=None, progress_stream=None):
        return f"stand-in engine {next(counter)};".encode() * 2000, {"seconds": 0.01, "layers": 3}

    monkeypatch.setattr(engine_files, "build_serialized", build_serialized)
    monkeypatch.setattr(engine_files, "ensure_runnable", lambda plan: None)


def build_args(onnx: Path, engine: Path, *extra: str) -> list[str]:
    return ["--runtime", "tensorrt-rtx", "--onnx", str(onnx), "--output", str(engine), "-q", *PROFILE, *extra]


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- 1. engine and manifest are replaced together ------------------------------------------------------------------
def test_a_kill_at_any_instant_leaves_the_old_pair_or_the_new_one(tmp_path, files, fake_builder, monkeypatch):
    """Every state the folder passes through during a --force rebuild, as a SIGKILL would leave it (snapshots at
    each rename and removal, before and after: no cleanup handler runs after a kill), is restored in a fresh
    folder: the engine there reads as the old pair or the new one, and the next --force build clears the rest."""
    engines = tmp_path / "engines"
    engine = engines / "tiny.engine"
    assert build_trt.main(build_args(files["fp32"], engine)) == 0
    old = folder_state(engines)

    states = []
    real_replace, real_unlink = os.replace, os.unlink

    def snapshot():
        state = folder_state(engines)
        if not states or states[-1] != state:
            states.append(state)

    def replace(src, dst, **kwargs):
        snapshot()
        real_replace(src, dst, **kwargs)
        snapshot()

    def unlink(path, **kwargs):
        snapshot()
        real_unlink(path, **kwargs)
        snapshot()

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    assert build_trt.main(build_args(files["fp32"], engine, "--force")) == 0
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(os, "unlink", real_unlink)
    new = folder_state(engines)
    assert new["tiny.engine"] != old["tiny.engine"]
    assert any(set(s) - {"tiny.engine", "tiny.json"} for s in states), "no staged file was ever seen"

    pairs = {sha(old["tiny.engine"]): "old", sha(new["tiny.engine"]): "new"}
    seen = set()
    for i, state in enumerate(states):
        crashed = tmp_path / f"crash{i}"
        crashed.mkdir()
        for name, data in state.items():
            (crashed / name).write_bytes(data)
        manifest = read_manifest(crashed / "tiny.engine")  # verifies the engine's sha256 and size
        assert manifest.engine_sha256 in pairs, f"state {i}: {sorted(state)}"
        seen.add(pairs[manifest.engine_sha256])
        assert build_trt.main(build_args(files["fp32"], crashed / "tiny.engine", "--force")) == 0
        assert sorted(p.name for p in crashed.iterdir()) == ["tiny.engine", "tiny.json"], f"state {i}"
        read_manifest(crashed / "tiny.engine")
    assert seen == {"old", "new"}


def test_a_real_sigkill_between_the_two_renames(tmp_path, files):
    """A real TensorRT for RTX rebuild killed (SIGKILL) right after the new engine is renamed in, before its
    manifest: the engine reads as the new pair; the next --force build completes cleanly."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (pip install '.[rtx]')")
    engine = tmp_path / "tiny.engine"
    args = build_args(files["fp32"], engine, "--no-progress")
    assert build_trt.main(args) == 0
    script = (
        "import os, runpy, signal, sys\n"
        f"sys.argv = ['export/build_trt.py', *{[*args, '--force']!r}]\n"
        "real = os.replace\n"
        "def replace(src, dst):\n"
        "    real(src, dst)\n"
        f"    if os.fspath(dst) == {str(engine)!r}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = replace\n"
        "runpy.run_path('export/build_trt.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    assert (tmp_path / "tiny.partial.json").is_file()  # the manifest rename never happened
    assert read_manifest(engine).engine_sha256 == sha(engine.read_bytes())
    assert build_trt.main([*args, "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.engine", "tiny.json"]
    read_manifest(engine)


def test_a_failed_drift_check_keeps_the_old_pair(tmp_path, files, fake_builder, monkeypatch):
    engine = tmp_path / "tiny.engine"
    assert build_trt.main(build_args(files["fp32"], engine)) == 0
    old = folder_state(tmp_path)
    plan = trt_build.make_plan(trt_build.BuildOptions(onnx=files["fp32"], output=engine, force=True,
                                                      min_shape=(1, 64, 64), opt_shape=(1, 64, 64),
                                                      max_shape=(1, 128, 128), progress=False),
                               trt_build.detect_runtime("tensorrt-rtx"))
    monkeypatch.setattr(engine_files, "ensure_runnable", lambda plan: {"name": "a GPU", "compute_capability": [8, 6]})
    with pytest.raises(trt_build.BuildError, match="left at .*tiny.failed.engine.*tiny.engine unchanged"):
        trt_build.build(plan, measure=lambda plan, path: {"worst_psnr_db": 12.0, "passed": False})
    after = folder_state(tmp_path)
    assert {k: after[k] for k in old} == old
    assert sorted(after) == ["tiny.engine", "tiny.failed.engine", "tiny.failed.json", "tiny.json"]
    assert read_manifest(tmp_path / "tiny.failed.engine").drift["passed"] is False


# -- 2. --check fails when it cannot measure, and keeps what was measured -------------------------------------------
@pytest.fixture
def checked_pair(tmp_path):
    """A stand-in engine with a manifest that already records a measured drift."""
    engine = tmp_path / "tiny_fp16.engine"
    engine.write_bytes(b"engine")
    manifest = make_manifest(runtime="tensorrt-rtx", runtime_version="1.7.1.116", gpu=None,
                             drift={"worst_psnr_db": 47.5, "passed": True})
    manifest.write(manifest_path(engine))
    return engine


def test_check_without_its_fp32_onnx_fails_and_keeps_the_measurement(checked_pair, capsys):
    before = folder_state(checked_pair.parent)
    line = refused(capsys, build_trt.main(["--check", str(checked_pair)]), "cannot measure the drift",
                   "no FP32 ONNX at", "tiny.onnx", "export it with python export/to_onnx.py")
    assert "?" not in line
    assert folder_state(checked_pair.parent) == before
    assert read_manifest(checked_pair).drift == {"worst_psnr_db": 47.5, "passed": True}


@pytest.mark.parametrize("reference, message", [
    ("random", "not a readable ONNX model"),
    ("truncated", "not a readable ONNX model"),
    ("foreign", "metadata lacks"),
    ("fp16", "is a FP16 ONNX, the reference must be the FP32 export"),
    ("folder", "not a file"),
])
def test_check_refuses_a_reference_it_cannot_use(checked_pair, files, capsys, reference, message):
    before = folder_state(checked_pair.parent)
    code = build_trt.main(["--check", str(checked_pair), "--onnx", str(files[reference])])
    line = refused(capsys, code, message)
    assert folder_state(checked_pair.parent) == before
    if reference == "fp16":  # round 17: the export it suggested wrote over the user's FP16 file (with --force)
        assert f"--output {files['fp16']}" not in line and "export it with python export/to_onnx.py" in line


def test_check_refuses_a_reference_of_other_weights(checked_pair, files, capsys):
    import onnx

    other = checked_pair.parent / "tiny.onnx"
    model = onnx.load(str(files["fp32"]))
    for entry in model.metadata_props:
        if entry.key == "banet.source_sha256":
            entry.value = "cd" * 32
    onnx.save(model, str(other))
    refused(capsys, build_trt.main(["--check", str(checked_pair)]), "exported from other weights")


def test_check_without_a_gpu_fails_and_keeps_the_measurement(checked_pair, files, capsys):
    """With its FP32 ONNX beside it, what is missing here is a GPU (or, on a GPU machine, a real engine)."""
    shutil.copy(files["fp32"], checked_pair.parent / "tiny.onnx")
    before = folder_state(checked_pair.parent)
    refused(capsys, build_trt.main(["--check", str(checked_pair)]))
    assert folder_state(checked_pair.parent) == before


def test_check_of_a_missing_or_foreign_engine(tmp_path, capsys):
    refused(capsys, build_trt.main(["--check", str(tmp_path / "nope.engine")]), "engine file not found")
    (tmp_path / "dir.engine").mkdir()
    refused(capsys, build_trt.main(["--check", str(tmp_path / "dir.engine")]), "is a directory")
    (tmp_path / "x.engine").write_bytes(b"engine")
    (tmp_path / "x.json").write_text("[]")
    refused(capsys, build_trt.main(["--check", str(tmp_path / "x.engine")]), "not an engine manifest")
    assert (tmp_path / "x.json").read_text() == "[]"


# -- 3. a full disk ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("full_on", [".engine.partial", ".json.partial"])
def test_full_disk_is_one_line_and_leaves_the_old_pair(tmp_path, files, fake_builder, monkeypatch, capsys, full_on):
    engine = tmp_path / "tiny.engine"
    assert build_trt.main(build_args(files["fp32"], engine)) == 0
    before = folder_state(tmp_path)
    capsys.readouterr()

    def full_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        # write_atomic opens the partial file it created by descriptor (O_EXCL|O_NOFOLLOW): name it through /proc
        name = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else str(path)
        return FullDisk(handle, 100) if "w" in mode and name.endswith(full_on) else handle

    monkeypatch.setattr(banet.outputs, "open", full_open, raising=False)
    line = refused(capsys, build_trt.main(build_args(files["fp32"], engine, "--force")),
                   "no space left on device writing", str(engine), "MB free")
    if full_on == ".engine.partial":
        assert "MB needed" in line
    assert folder_state(tmp_path) == before  # nothing partial left, the old pair byte for byte


# -- 4./5. inputs: missing, folders, foreign, truncated ------------------------------------------------------------
@pytest.mark.parametrize("kind, message", [
    ("missing", "ONNX file not found; make it with python export/to_onnx.py --output"),
    ("folder", "not a file"),
    ("random", "not a readable ONNX model"),
    ("truncated", "not a readable ONNX model"),
    ("foreign", "metadata lacks 'banet.schema'"),
    ("disguised", "not a BANet graph"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_build_refuses_a_bad_onnx(tmp_path, files, capsys, kind, message, dry_run):
    onnx = tmp_path / "mistyped.onnx" if kind == "missing" else files[kind]
    engine = tmp_path / "x.engine"
    code = build_trt.main(build_args(onnx, engine, *(["--dry-run"] if dry_run else [])))
    refused(capsys, code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing exported to the mistyped name, no engine


def test_build_refuses_missing_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BANET_ENGINES", str(tmp_path))
    code = build_trt.main(["--runtime", "tensorrt-rtx", "--weights", str(tmp_path / "mistyped.safetensors"),
                           "--dry-run"])
    refused(capsys, code, "mistyped.safetensors: checkpoint file not found")
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_a_folder_as_timing_cache(tmp_path, files, capsys):
    (tmp_path / "cache").mkdir()
    code = build_trt.main(build_args(files["fp32"], tmp_path / "x.engine", "--timing-cache", str(tmp_path / "cache"),
                                     "--dry-run"))
    refused(capsys, code, "is a directory")


@pytest.mark.parametrize("kind, message", [
    ("random", "not a PyTorch checkpoint"),
    ("truncated", "not a readable safetensors file"),
    ("folder", "not a file"),
    ("missing", "checkpoint file not found"),
])
def test_to_onnx_refuses_bad_weights(tmp_path, files, capsys, kind, message):
    weights = {"random": tmp_path / "random.pth", "truncated": tmp_path / "cut.safetensors",
               "folder": tmp_path, "missing": tmp_path / "mistyped.pth"}[kind]
    if kind == "random":
        weights.write_bytes(RANDOM_BYTES)
    if kind == "truncated":
        weights.write_bytes(files["weights"].read_bytes()[:3000])
    before = folder_state(tmp_path)
    output = tmp_path / "out.onnx"
    refused(capsys, to_onnx.main(["--weights", str(weights), "--output", str(output)]), message)
    assert folder_state(tmp_path) == before


def test_to_onnx_refuses_a_folder_as_report_before_exporting(tmp_path, files, capsys, monkeypatch):
    monkeypatch.setattr(to_onnx, "load_checkpoint", lambda path: pytest.fail("the export started"))
    code = to_onnx.main(["--weights", str(files["weights"]), "--output", str(tmp_path / "x.onnx"), "--report",
                         str(tmp_path)])
    refused(capsys, code, "is a directory")


# -- the real command line -----------------------------------------------------------------------------------------
def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export" / "build_trt.py"), *args], capture_output=True,
                          text=True, cwd="/", timeout=300)


def test_command_line_check_and_bad_onnx_print_no_traceback(checked_pair, files):
    before = folder_state(checked_pair.parent)
    for args, needle in ((["--check", str(checked_pair)], "no FP32 ONNX at"),
                         (build_args(files["random"], checked_pair.parent / "y.engine"), "not a readable ONNX")):
        result = run_script(*args)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and needle in result.stderr
    assert folder_state(checked_pair.parent) == before


def test_manifest_error_messages_stay_one_line(tmp_path):
    """What the reader says about manifests that are not ours (read by --check and the runtime alike)."""
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    for text, message in (("[]", "not an engine manifest"), ("{", "unreadable manifest"),
                          (json.dumps({"schema": 1}), "lacks")):
        manifest_path(engine).write_text(text)
        with pytest.raises(ManifestError, match=message) as info:
            read_manifest(engine)
        assert "\n" not in str(info.value)


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, files, capsys, monkeypatch):
    import onnx

    real_save = onnx.save

    def full_save(proto, path, *args, **kwargs):
        real_save(proto, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full_save)
    code = to_onnx.main(["--weights", str(files["weights"]), "--output", str(tmp_path / "x.onnx"), "-q",
                         "--no-default-sweep", "--verify-sizes", "1x32x32"])
    refused(capsys, code, "no space left on device writing", "x.onnx")
    assert list(tmp_path.iterdir()) == []


# -- 5. two builds of one engine at once ---------------------------------------------------------------------------
def test_a_second_build_of_the_same_engine_is_refused_while_the_first_runs(tmp_path, files, fake_builder, capsys):
    """Another process holds the engine's build lock (a build in progress): a second build is refused in one line
    naming it, touches nothing; once that process dies (SIGKILL: no cleanup runs) the lock is gone with it."""
    engine = tmp_path / "tiny.engine"
    assert build_trt.main(build_args(files["fp32"], engine)) == 0
    before = folder_state(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from banet.manifest import build_lock\n"
                               f"with build_lock({str(engine)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        refused(capsys, build_trt.main(build_args(files["fp32"], engine, "--force")),
                f"another build of {engine} is running (pid {holder.pid})")
        state = folder_state(tmp_path)
        assert {k: state[k] for k in before} == before and sorted(state) == sorted([*before, "tiny.engine.lock"])
    finally:
        holder.kill()
        holder.wait()
    assert build_trt.main(build_args(files["fp32"], engine, "--force")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.engine", "tiny.json"]
    rebuilt = engine.read_bytes()
    assert rebuilt != before["tiny.engine"] and read_manifest(engine).engine_sha256 == sha(rebuilt)


def test_check_on_an_onnx_file_says_it_is_not_an_engine(tmp_path, capsys):
    """Round 17: ``--check model.onnx`` said "no manifest at model.json; engines must be built by build_trt.py"."""
    model = tmp_path / "my model.onnx"
    model.write_bytes(b"not read")
    line = refused(capsys, build_trt.main(["--check", str(model)]), "is an ONNX model, not an engine")
    assert f"python export/build_trt.py --onnx '{model}'" in line
