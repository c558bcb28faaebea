"""Run an app graph on onnxruntime-web, the WebAssembly build of ONNX Runtime that browsers load: under Node.js, or
in a real browser (headless Chromium) through the page's own code.

``apps/web/deblur.mjs`` is the Node.js program, ``apps/web/browser.mjs`` the browser's (``index.html`` and
``page.mjs``, served with the headers WebAssembly threads need, driven by playwright-core): the project's ``apps/web``
holds their ``package.json`` (onnxruntime-web and playwright-core pinned), and ``scripts/setup.sh`` installs it with
npm where Node.js is on the machine; Chromium itself is the system's (``apt install chromium``). Both run the same
WebAssembly kernels; they are another build than the native ONNX Runtime the runtime uses, so
:mod:`export.app_check` holds their output to the precision's drift floor and reports their pixel agreement.
"""

from __future__ import annotations

import json
import os
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
BROWSER_SCRIPT = WEB_DIR / "browser.mjs"
#: Chromium's names on the PATH (Debian's package, others'), unless $CHROMIUM names one.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The Chromium that ``apps/web/browser.mjs`` drives: ``$CHROMIUM``, else the first of :data:`CHROMIUM_NAMES`
    on the PATH; None where there is none."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def web_problem(browser: bool = False) -> str | None:
    """Why onnxruntime-web cannot run here (under Node.js; ``browser``: in Chromium), one line naming the fix, or
    None when it can."""
    if checkout_root() is None or not SCRIPT.is_file():
        return "onnxruntime-web runs from a source checkout's apps/web (not part of an installed package)"
    if shutil.which("node") is None:
        return "Node.js is not installed (node runs onnxruntime-web, and drives the browser)"
    needed = ("onnxruntime-web", "playwright-core") if browser else ("onnxruntime-web",)
    missing = [name for name in needed if not (WEB_DIR / "node_modules" / name).is_dir()]
    if missing:
        return (f"{' and '.join(missing)} not installed: npm ci --prefix apps/web (scripts/setup.sh does it where "
                "npm is)")
    if browser and chromium_path() is None:
        return "Chromium is not installed (apt install chromium; or set $CHROMIUM to a Chromium or Chrome)"
    return None


def web_app_run(app_file: Path, threads: int = 1, timeout_s: float = 600.0, browser: bool = False) -> AppRun:
    """``images -> (deblurred, finite)`` through ``apps/web/deblur.mjs`` (a Node.js process per call), or with
    ``browser`` through ``apps/web/browser.mjs`` (the page's code in headless Chromium, a browser per call)."""
    problem = web_problem(browser)
    if problem:
        raise RuntimeError(problem)
    script = BROWSER_SCRIPT if browser else SCRIPT
    where = "onnxruntime-web in Chromium" if browser else "onnxruntime-web"

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        with tempfile.TemporaryDirectory(prefix="banet-web-") as tmp:
            source, target = Path(tmp) / "in.raw", Path(tmp) / "out.raw"
            images.tofile(source)
            done = subprocess.run(["node", str(script), str(app_file), str(source), *map(str, images.shape),
                                   str(target), "--threads", str(threads)],
                                  capture_output=True, text=True, timeout=timeout_s)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                raise RuntimeError(f"{where} failed: {last}")
            said = json.loads(done.stdout.strip().splitlines()[-1])
            deblurred = np.fromfile(target, np.uint8).reshape(said["dims"])
        return deblurred, np.array(said["finite"], dtype=bool)

    return run
