"""Each README (and docs/) example that writes into the engines folder, run after the main job, leaves the main job's
artifacts (and the default INT8 files the drift report and benchmarks read) byte-identical: it refuses with
"exists", or writes a file of its own name (banet/artifacts.py: a static, simplified or otherwise different file
never takes a default name), unless the README line says it replaces them.

Fast by construction, with the real rules: the examples are read from README.md and docs/*.md and run
in-process on a tiny network (``--weights tiny.safetensors`` appended) in an engines folder of the test's own
(``$BANET_ENGINES``, the documented rule), after the main job's commands ran on the same network there.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the examples export a network: pip install '.[export]'")

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"export/to_onnx.py": "export.to_onnx", "export/build_trt.py": "export.build_trt",
            "calibration.quantize": "calibration.quantize"}
#: Appended to every run: small verification and calibration sizes (the last occurrence of an option wins), the
#: same names and rules. The README's large sizes are scaled down the same way (:func:`fast`).
FAST = {"export/to_onnx.py": ["--no-default-sweep", "--verify-sizes", "1x32x32"], "export/build_trt.py": [],
        "calibration.quantize": ["--calib-count", "2", "--calib-size", "128x128"]}


#: Options that make a different file than the default one: with them even --force must not touch the defaults.
VARIANT_OPTIONS = {"--simplify", "--static", "--exclude", "--auto-exclude", "--calib-dir", "--method"}


def fast(command: str, args: list[str]) -> list[str]:
    """The example with its sizes scaled down (a static 720x1280 export becomes a static 64x96 one)."""
    args = [a if a != "720x1280" else "64x96" for a in args]
    if "--static" in args:
        return args  # a static export verifies at its own size
    return [*args, *FAST[command]]


#: The pages whose examples are run: the README and the pages it moved its details to (issue 32).
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_examples() -> list[tuple[str, list[str], str]]:
    """(command, arguments, the line's comment) of each line of README.md and docs/*.md running one of
    :data:`COMMANDS` on the default model (lines with their own --weights, --help, --check or another TensorRT
    are left out; a line shown on two pages is run once)."""
    examples = []
    lines = [line for page in PAGES for line in page.read_text().splitlines()]
    for line in lines:
        if not re.match(r"(\.venv/bin/)?python (-m calibration\.quantize|export/to_onnx\.py|export/build_trt\.py)\b",
                        line):
            continue
        code, _, comment = line.partition("#")
        words = shlex.split(code.replace(".venv/bin/", ""))
        if "&&" in words:  # the main job itself
            continue
        command = words[2] if words[1] == "-m" else words[1]
        args = words[3:] if words[1] == "-m" else words[2:]
        if command not in COMMANDS or {"--weights", "--help", "--check", "--onnx", "--engine"} & set(args):
            continue
        if "--runtime" in args and args[args.index("--runtime") + 1] == "tensorrt":
            continue
        if all((command, args) != (c, a) for c, a, _ in examples):
            examples.append((command, args, comment.strip()))
    return examples


def run(command: str, args: list[str]) -> int:
    main = importlib.import_module(COMMANDS[command]).main
    try:
        return main(args)
    except SystemExit as stop:  # argparse
        return stop.code


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def after_main_job(tmp_path_factory):
    """The main job (to_onnx --force, build_trt --fp16 ... --target sm75 --force) and the default quantization,
    on a tiny network, in an engines folder of this module's own."""
    import torch

    from banet.checkpoint import save_checkpoint
    from banet.config import BANetConfig
    from banet.model import BANet

    work = tmp_path_factory.mktemp("readme")
    engines = work / "engines"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BANET_ENGINES", str(engines))
        patch.setenv("BANET_CACHE", str(work / "cache"))
        torch.manual_seed(0)
        weights = save_checkpoint(BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval(), work / "tiny.safetensors")
        tiny = ["--weights", str(weights)]
        assert run("export/to_onnx.py", fast("export/to_onnx.py", ["--force", "-q", *tiny])) == 0
        rtx = importlib.util.find_spec("tensorrt_rtx") is not None
        if rtx:  # (its FP16 ONNX exported first, with the small sweep)
            assert run("export/to_onnx.py", fast("export/to_onnx.py", ["--fp16", "--force", "-q", *tiny])) == 0
            assert run("export/build_trt.py", ["--fp16", "--runtime", "tensorrt-rtx", "--target", "sm75", "--force",
                                               "-q", *tiny]) == 0
        assert run("calibration.quantize", fast("calibration.quantize", ["--force", *tiny])) == 0
    return work, engines, weights, rtx


def test_the_readme_has_the_examples():
    commands = {command for command, _, _ in readme_examples()}
    assert commands == set(COMMANDS), commands


@pytest.mark.parametrize("command, args, comment", readme_examples(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v)[:30])
def test_readme_example_keeps_the_main_jobs_artifacts(after_main_job, monkeypatch, command, args, comment):
    from PIL import Image

    work, engines, weights, rtx = after_main_job
    monkeypatch.setenv("BANET_ENGINES", str(engines))
    monkeypatch.setenv("BANET_CACHE", str(work / "cache"))
    monkeypatch.chdir(work)
    if "--calib-dir" in args:  # the example's own folder of blurred photos
        folder = work / args[args.index("--calib-dir") + 1]
        folder.mkdir(exist_ok=True)
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 96, 3), np.uint8)).save(folder / f"{i}.png")
    if "--auto-exclude" in args:  # the search's result is the search's test (test_quantize.py); here: the name
        from calibration import quantize, sensitivity

        monkeypatch.setattr(quantize, "search", lambda fp32, source, flavour, method, budget, **_: (
            sensitivity.SensitivityReport(flavour, method, budget, "stand-in search: nothing kept in float", 99.0, [])))
    before = digest(engines)
    code = run(command, fast(command, [*args, "--weights", str(weights)]))
    after = digest(engines)
    if "replace" in comment:
        pytest.fail(f"a README example that says it replaces the defaults needs its own check: {comment}")
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"{command} {shlex.join(args)} (exit {code}) changed the main job's {changed}"
    if VARIANT_OPTIONS & set(args) and "--force" not in args:  # what a user adds after "exists": still its own file
        code = run(command, fast(command, [*args, "--weights", str(weights), "--force"]))
        assert code == 0 and all(digest(engines).get(name) == before[name] for name in before), code
    if not rtx and command == "export/build_trt.py":
        return
    new = sorted(set(after) - set(before))
    assert code == 0 or not new, (code, new)  # refused: nothing written; else it wrote its own files
