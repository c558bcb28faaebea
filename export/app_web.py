"""Run an app graph on onnxruntime-web, the WebAssembly build of ONNX Runtime that browsers load (under Node.js).

``apps/web/deblur.mjs`` is the program: the project's ``apps/web`` holds its ``package.json`` (onnxruntime-web
pinned), and ``scripts/setup.sh`` installs it with npm where Node.js is on the machine. A browser runs the same
WebAssembly kernels; they are another build than the native ONNX Runtime the runtime uses, so
:mod:`export.app_check` holds their output to the precision's drift floor and reports their pixel agreement.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from banet.artifacts import checkout_root
from export.app_check import AppRun

#: Where the Node.js program and its node_modules live (in a source checkout).
WEB_DIR = Path(__file__).resolve().parent.parent / "apps" / "web"
SCRIPT = WEB_DIR / "deblur.mjs"


def web_problem() -> str | None:
    """Why onnxruntime-web cannot run here (one line naming the fix), or None when it can."""
    if checkout_root() is None or not SCRIPT.is_file():
        return "onnxruntime-web runs from a source checkout's apps/web (not part of an installed package)"
    if shutil.which("node") is None:
        return "Node.js is not installed (node runs onnxruntime-web outside a browser)"
    if not (WEB_DIR / "node_modules" / "onnxruntime-web").is_dir():
        return "onnxruntime-web is not installed: npm ci --prefix apps/web (scripts/setup.sh does it where npm is)"
    return None


def web_app_run(app_file: Path, threads: int = 1, timeout_s: float = 600.0) -> AppRun:
    """``images -> (deblurred, finite)`` through ``apps/web/deblur.mjs`` (a Node.js process per call)."""
    problem = web_problem()
    if problem:
        raise RuntimeError(problem)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        with tempfile.TemporaryDirectory(prefix="banet-web-") as tmp:
            source, target = Path(tmp) / "in.raw", Path(tmp) / "out.raw"
            images.tofile(source)
            done = subprocess.run(["node", str(SCRIPT), str(app_file), str(source), *map(str, images.shape),
                                   str(target), "--threads", str(threads)],
                                  capture_output=True, text=True, timeout=timeout_s)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                raise RuntimeError(f"onnxruntime-web failed: {last}")
            said = json.loads(done.stdout.strip().splitlines()[-1])
            deblurred = np.fromfile(target, np.uint8).reshape(said["dims"])
        return deblurred, np.array(said["finite"], dtype=bool)

    return run
