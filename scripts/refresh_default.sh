#!/usr/bin/env bash
# Ship a new default model and regenerate every artifact and number that depends on it, in order:
# weights -> held-out evaluation (pictures) -> FP32/FP16 ONNX -> INT8 Q/DQ -> TensorRT for RTX engines ->
# drift report -> FP16 drift table -> benchmarks. The README's numbers come from the files this writes.
#
#   bash scripts/refresh_default.sh                      # from training/runs/do-no-harm/last.pt
#   bash scripts/refresh_default.sh --no-benchmarks      # skip the ~10-minute benchmark run
#   RUN=training/runs/other bash scripts/refresh_default.sh
#   WEIGHTS=out/gpu_train/weights.safetensors bash scripts/refresh_default.sh   # weights already exported
#
# Replaces banet/weights/banet_default.safetensors and its shipped ONNX banet/weights/banet_default.onnx (what
# Deblurrer() runs without torch; tests/banet/test_default_onnx.py fails until it is regenerated; the old ones
# stay in git history), docs/images/*,
# docs/drift_report.* and writes benchmarks/results/<cpu>_<date>.*. Pause any training on this machine first:
# the speed columns are only honest on an otherwise idle CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-training/runs/do-no-harm}
benchmarks=1
[[ "${1:-}" == "--no-benchmarks" ]] && benchmarks=0

step() { printf '\n== %s\n' "$*"; }

if [[ -n "${WEIGHTS:-}" ]]; then
    step "weights from $WEIGHTS"
    $PY - "$WEIGHTS" <<'CHECK' || exit 1  # refuse a file that is not a BANet checkpoint before replacing ours
import sys
from banet.checkpoint import load_checkpoint
from banet.errors import CheckpointError
try:
    load_checkpoint(sys.argv[1])
except CheckpointError as exc:
    sys.exit(f"error: {exc}")
CHECK
    cp "$WEIGHTS" banet/weights/banet_default.safetensors
else
    step "weights from $RUN"
    $PY -m training.train --run "$RUN" --export banet/weights/banet_default.safetensors --force
fi

step "held-out evaluation -> docs/images/"
$PY -m training.evaluate --output out/eval --force
cp out/eval/side_by_side_trajectory.png docs/images/heldout_side_by_side.png
cp out/eval/side_by_side_linear_srgb.png docs/images/heldout_linear_srgb.png
cp out/eval/sharp_worst.png docs/images/sharp_worst.png
cp out/eval/clock_motion.png docs/images/clock_motion.png
cp out/eval/metrics.json docs/images/heldout_metrics.json

step "ONNX (FP32, FP16), each verified against PyTorch"
$PY export/to_onnx.py --force
$PY export/to_onnx.py --fp16 --force

step "shipped default ONNX -> banet/weights/banet_default.onnx (the FP32 export just verified)"
ENGINES=$($PY -c "from banet.artifacts import engines_dir; print(engines_dir())")
cp "$ENGINES/banet_default.onnx" banet/weights/banet_default.onnx
$PY -m pytest -q tests/banet/test_default_onnx.py

step "INT8 Q/DQ (ort, trt and ov flavours); ort and ov ship -> banet/weights/ (Deblurrer(precision='int8'))"
$PY -m calibration.quantize --flavour all --force
cp "$ENGINES/banet_default_int8_ort.onnx" banet/weights/banet_default_int8_ort.onnx
cp "$ENGINES/banet_default_int8_ov.onnx" banet/weights/banet_default_int8_ov.onnx
$PY -m pytest -q tests/runtime/test_selection.py -k shipped

step "TensorRT for RTX engines (no GPU needed)"
$PY export/build_trt.py --runtime tensorrt-rtx --force
$PY export/build_trt.py --fp16 --runtime tensorrt-rtx --force
$PY export/build_trt.py --fp16 --runtime tensorrt-rtx --target sm75 --force

step "drift report -> docs/"
$PY -m calibration.drift --full
cp out/drift/drift_report.json out/drift/drift_report.md docs/

step "FP16 drift table (README)"
$PY -m calibration.fp16 --full --json out/fp16_drift.json --force

if (( benchmarks )); then
    step "benchmarks -> benchmarks/results/"
    $PY -m benchmarks.run --force   # today's results files, if this machine wrote some already, are replaced
fi
step "done: update the README's numbers from docs/images/heldout_metrics.json, docs/drift_report.md, out/fp16_drift.json and benchmarks/results/"
