#!/usr/bin/env bash
# What only a GPU can show, in one call: real FP16 drift and GPU latency. Meant for a lent GPU machine
# (PyTorch, ONNX, ONNX Runtime, scikit-image, safetensors and tqdm preinstalled, no network), run from the
# repository root with the working tree copied there:
#
#   bash scripts/gpu_checks.sh [OUT]     # OUT defaults to out/gpu_checks
#
# Writes OUT/env.txt (GPU, driver, versions), OUT/drift/drift_report.{json,md} (FP16 rows measured in real
# half precision on the GPU, next to the CPU rows) and OUT/bench/<gpu>_<date>.{json,md,png} (PyTorch eager FP32
# vs FP16, channels_last, torch.compile and CUDA graphs; ONNX Runtime where its providers exist). Each phase
# has its own time limit (about 10 minutes in all) so one slow phase cannot eat the whole lease. Commit what
# comes back with the device name; CI never depends on it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-out/gpu_checks}}
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    $PY -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available()); print("onnxruntime", ort.__version__, ort.get_available_providers())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")' || exit 2

echo "== drift report (FP16 on the GPU, INT8 on ONNX Runtime CPU)"
timeout 150 $PY -m calibration.drift --full --no-speed --output "$OUT/drift" || { echo "drift: exit $?"; status=1; }

echo "== GPU latency (PyTorch eager FP32 baseline, FP16, channels_last, compile, CUDA graphs)"
# Batch 1 only: torch.compile autotunes once per shape. ONNX Runtime runs on the CPU there; --max-call-s 3
# skips its large sizes.
timeout 420 $PY -m benchmarks.run --sizes 256x256 720x1280 1080x1920 --full-sizes 256x256 720x1280 \
    --batches 1 --repeats 50 --warmup 5 --max-call-s 3 --output "$OUT/bench" || { echo "benchmarks: exit $?"; status=1; }
exit $status
