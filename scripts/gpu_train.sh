#!/usr/bin/env bash
# Issue 18 on a lent GPU, in one call: widen the shipped default (training/grow.py: same function, more
# channels), fine-tune it on the do-no-harm mixture with fp16 autocast, and score it with training.evaluate.
# The CPU machines here train this network at ~3.4 s per 4x128 px step; a datacenter GPU does in minutes what
# would take them a day.
#
# Once, here (the photos travel with the working tree; data/ is git-ignored, ~38 MB):
#   bash training/get_photos.sh --extract data/photos
# Then, on the GPU machine (device tool: carry ["data"], timeout_s 600):
#   bash scripts/gpu_train.sh [OUT]          # OUT defaults to $OUT, else out/gpu_train
#
# Knobs (environment): WIDTH (96; the new BAM width), STEPS (3000), CROP (256), BATCH (16), LR (1e-4),
# MINUTES (7: training stops there, resumably, even mid-schedule), RECIPE (do-no-harm), DEVICE (cuda).
# Writes OUT/weights.safetensors (to ship it: WEIGHTS=OUT/weights.safetensors bash scripts/refresh_default.sh;
# to train on, pass it to training.train --init-from), OUT/history.jsonl, OUT/eval/metrics.json (+ pictures), OUT/env.txt and
# OUT/log.txt. Commit the history and the metrics with the device name; CI never depends on this.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-out/gpu_train}}
PY=${PY:-python3}
WIDTH=${WIDTH:-96} STEPS=${STEPS:-3000} CROP=${CROP:-256} BATCH=${BATCH:-16} LR=${LR:-1e-4}
MINUTES=${MINUTES:-7} RECIPE=${RECIPE:-do-no-harm} DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BANET_PHOTO_ROOT=${BANET_PHOTO_ROOT:-$PWD/data/photos}
mkdir -p "$OUT"
RUN="$OUT/run"
exec > >(tee -a "$OUT/log.txt") 2>&1

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
    echo "WIDTH=$WIDTH STEPS=$STEPS CROP=$CROP BATCH=$BATCH LR=$LR MINUTES=$MINUTES RECIPE=$RECIPE DEVICE=$DEVICE"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ "$DEVICE" == cuda ]]; then
    $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")' || exit 2
fi

echo "== grow the shipped default to width $WIDTH"
start="$OUT/start.safetensors"
[[ -f "$start" ]] || $PY -m training.grow --width "$WIDTH" --output "$start" || exit 1

echo "== fine-tune ($STEPS steps of ${BATCH}x${CROP} px, at most $MINUTES minutes)"
$PY -m training.train --run "$RUN" --widths "32,$WIDTH" --recipe "$RECIPE" --steps "$STEPS" --crop "$CROP" \
    --batch "$BATCH" --lr "$LR" --warmup 100 --eval-every "$STEPS" --device "$DEVICE" --precision auto \
    --max-minutes "$MINUTES" --init-from "$start" || exit 1
cp "$RUN/history.jsonl" "$OUT/history.jsonl"

echo "== export and evaluate every held-out family"
rm -f "$OUT/weights.safetensors"
$PY -m training.train --run "$RUN" --export "$OUT/weights.safetensors" || exit 1
rm -f "$RUN/last.pt"  # 49 MB of optimizer state: the exported weights resume the run (--init-from)
$PY -m training.evaluate --weights "$OUT/weights.safetensors" --output "$OUT/eval"
