#!/usr/bin/env bash
# The thin deploy install, checked for real. A fresh venv gets only `pip install '.[cpu]'` (non-editable:
# numpy, Pillow, tqdm and ONNX Runtime; no torch, onnx or OpenCV); then, from an empty folder, `Deblurrer` runs
# an exported ONNX on a photo, `Deblurrer()` runs the embedded default model (its shipped ONNX) and the command
# line deblurs the file. Prints one JSON line: the venv's size on disk, the `from runtime import Deblurrer` time
# (best of 3 fresh processes), what was imported, where outputs went.
#
#   bash scripts/deploy_check.sh MODEL.onnx PHOTO.png [WORKDIR]   # WORKDIR kept; without it a temporary one, removed
#
# MODEL.onnx: any exported ONNX (banet/weights/banet_default.onnx ships with the package; others come from
# `python export/to_onnx.py` in the full install). Exit 1 if any check fails.
set -euo pipefail
MODEL=$(realpath "$1"); PHOTO=$(realpath "$2"); WORK=${3:-}
if [[ -z "$WORK" ]]; then  # a folder of its own: removed however the check ends (it left 220+ MB behind)
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$WORK/src" "$WORK/app"
# a copy of the sources, so building the wheel writes nothing into the checkout
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/src" 2>/dev/null) \
    || cp -r "$ROOT/." "$WORK/src"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$WORK/venv/bin/python" -m pip install --quiet "$WORK/src[cpu]" 2>&1 | grep -v "^WARNING" || true
cd "$WORK/app"
SIZE_MB=$(du -sm "$WORK/venv" | cut -f1)
IMPORT_S=$(for _ in 1 2 3; do "$WORK/venv/bin/python" -c \
    "import time; t = time.perf_counter(); from runtime import Deblurrer; print(f'{time.perf_counter() - t:.3f}')"; \
    done | sort -n | head -1)
"$WORK/venv/bin/python" - "$MODEL" "$PHOTO" "$SIZE_MB" "$IMPORT_S" <<'PYEOF'
import importlib.util
import json
import runpy
import sys
from pathlib import Path

import numpy as np
from PIL import Image

model, photo, size_mb, import_s = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
from runtime import Deblurrer  # noqa: E402

image = np.asarray(Image.open(photo).convert("RGB"))
with Deblurrer(model, rgb=True) as deblur:
    restored = deblur(image)
assert restored.shape == image.shape and restored.dtype == np.uint8, (restored.shape, restored.dtype)
np.save("api_output.npy", restored)
with Deblurrer(rgb=True) as deblur:  # no model: the embedded default, which must run without torch
    default_backend = deblur.backend.describe()
    default_restored = deblur(image)
np.save("default_output.npy", default_restored)
from banet.defaults import DEFAULT_WEIGHTS  # noqa: E402

try:  # a checkpoint needs torch: refused in one line that names the CPU install, no chained traceback
    Deblurrer(DEFAULT_WEIGHTS)
    checkpoint_error = None
except Exception as exc:  # noqa: BLE001
    checkpoint_error = {"type": type(exc).__name__, "message": str(exc),
                        "chained": exc.__cause__ is not None or not exc.__suppress_context__}
sys.argv = ["python -m runtime", str(photo), "--model", model, "--output", "cli_out", "-q"]
try:
    runpy.run_module("runtime", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code or 0
written = Path("cli_out") / photo.name
import runtime  # noqa: E402

report = {
    "venv_mb": size_mb, "import_runtime_s": import_s, "cli_exit": code, "default_backend": default_backend,
    "checkpoint_error": checkpoint_error,
    "cli_output": str(written.resolve()) if written.is_file() else None,
    "runtime_from": str(Path(runtime.__file__).resolve().parent),
    "installed": {m: importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "cv2", "onnxruntime")},
    "imported": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "onnx", "cv2", "export", "calibration",
                                                                "training", "benchmarks", "skimage"}),
}
print(json.dumps(report))
ok = code == 0 and report["cli_output"] and not report["imported"] and not any(
    report["installed"][m] for m in ("torch", "onnx", "cv2"))
sys.exit(0 if ok else 1)
PYEOF
