"""A whole phone photo through the command line users run: wall time and peak memory per backend and precision.

    python -m benchmarks.run --e2e 3000x4000          # adds these rows to the benchmark's results

Each case is ``python -m runtime PHOTO --backend B [--precision P] --threads T`` in a fresh process (model load,
decode, tiling, inference, encode: what a user waits for), its peak resident set size read from the kernel's
accounting of that child alone (``os.wait4``). The photo is scikit-image's astronaut resized to the size (a real
photograph at phone-camera resolution), written once as PNG.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: (backend, precision) cases; torch runs the checkpoint, the others the shipped ONNX files of the default model.
CASES = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
         ("openvino", "int8"))


def run_case(photo: Path, backend: str, precision: str, threads: int | None, folder: Path) -> dict:
    """One ``python -m runtime`` run: exit code, wall seconds and the child's peak RSS in MB."""
    cmd = [sys.executable, "-m", "runtime", str(photo), "--output", str(folder / f"{backend}_{precision}"),
           "--backend", backend, "--precision", precision, "--force", "-q"]
    if threads:
        cmd += ["--threads", str(threads)]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    row = {"command": " ".join(["python", *cmd[1:]]).replace(str(photo), photo.name), "backend": backend,
           "precision": precision, "threads": threads, "exit": child.returncode, "wall_s": round(seconds, 1),
           "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if child.returncode != 0:
        row["error"] = (stderr.strip().splitlines() or ["(no output)"])[-1]
    log.info("e2e %s %s: %.1f s, %d MB%s", backend, precision, seconds, row["peak_rss_mb"],
             f" (failed: {row['error']})" if "error" in row else "")
    return row


def end_to_end(height: int, width: int, threads: int | None = None, cases=CASES) -> list[dict]:
    """Every case on one photo of ``height`` x ``width``; a backend that is not installed fails its row in one
    line (the CLI's own error), which is kept as the reason."""
    import cv2

    from benchmarks.memory import photo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"photo_{height}x{width}.png"
        cv2.imwrite(str(path), photo(width, height))
        rows = [run_case(path, backend, precision, threads, folder) for backend, precision in cases]
    for row in rows:
        row["size"] = f"{height}x{width}"
    return rows
