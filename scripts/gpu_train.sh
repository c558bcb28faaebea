#!/usr/bin/env bash
# Fine-tune the shipped default on a lent GPU in one call, with the GPU kept busy: batches come from a pool of
# worker processes (training.train --workers: the same (seed, step) batches as in-process, so the run stays
# reproducible and resumable) and the schedule is time-budgeted (--minutes: the step rate is measured over the
# first steps, then the linear decay is sized to reach its floor at the deadline). Issues #30 (item 3) and #33.
#
# Once, here (the photos travel with the working tree; data/ is git-ignored, 37.3 MiB for the 437 photos):
#   bash training/get_photos.sh --extract data/photos
# Then, on the GPU machine (device tool: carry ["data"], timeout_s 600):
#   bash scripts/gpu_train.sh [OUT]          # OUT defaults to $OUT, else out/gpu_train
#
# Knobs (environment): MINUTES (6: the whole schedule, decay included, fits in it), WORKERS (8), STEPS (20000:
# only the provisional length until the rate is measured), CROP (256), BATCH (16), LR (5e-5), RECIPE
# (do-no-harm), AUGMENT (1: training.photos.DEFAULT_AUGMENT), WIDTH (64 = the shipped width; larger grows it
# first with training.grow, which #33 measured as no lever), RATE (1: measure data batches/s and training
# steps/s for 0 and $WORKERS workers first, ~1 minute), DEVICE (cuda).
# Writes OUT/weights.safetensors (to ship it: WEIGHTS=OUT/weights.safetensors bash scripts/refresh_default.sh;
# to train on, pass it to training.train --init-from), OUT/history.jsonl (steps/s per logged step),
# OUT/step_rate.jsonl, OUT/eval/metrics.json (+ pictures), OUT/eval/train_gap.json, OUT/env.txt and OUT/log.txt.
# Commit the history (as training/runs/<run>/history.jsonl; its first entry records the photo source and
# workers; last.pt stays ignored) and the metrics with the device name; CI never depends on this.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-out/gpu_train}}
PY=${PY:-python3}
WIDTH=${WIDTH:-64} STEPS=${STEPS:-20000} CROP=${CROP:-256} BATCH=${BATCH:-16} LR=${LR:-5e-5}
MINUTES=${MINUTES:-6} WORKERS=${WORKERS:-8} RECIPE=${RECIPE:-do-no-harm} AUGMENT=${AUGMENT:-1} RATE=${RATE:-1}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BANET_PHOTO_ROOT=${BANET_PHOTO_ROOT:-$PWD/data/photos}
mkdir -p "$OUT"
RUN="$OUT/run"
exec > >(tee -a "$OUT/log.txt") 2>&1

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
    nproc
    echo "WIDTH=$WIDTH STEPS=$STEPS CROP=$CROP BATCH=$BATCH LR=$LR MINUTES=$MINUTES WORKERS=$WORKERS" \
         "RECIPE=$RECIPE AUGMENT=$AUGMENT DEVICE=$DEVICE"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ "$DEVICE" == cuda ]]; then
    $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")' || exit 2
fi
augment=()
[[ "$AUGMENT" == 1 ]] && augment=(--augment)

if [[ "$RATE" == 1 ]]; then
    echo "== steps/s: data pipeline and training, 0 and $WORKERS workers"
    $PY -m training.step_rate --device "$DEVICE" --batch "$BATCH" --crop "$CROP" --recipe "$RECIPE" \
        "${augment[@]}" --workers 0 "$WORKERS" --steps 20 --skip 5 | tee "$OUT/step_rate.jsonl" || exit 1
fi

start=banet/weights/banet_default.safetensors
if [[ "$WIDTH" != 64 ]]; then
    echo "== grow the shipped default to width $WIDTH"
    start="$OUT/start.safetensors"
    [[ -f "$start" ]] || $PY -m training.grow --width "$WIDTH" --output "$start" || exit 1
fi

echo "== fine-tune (${BATCH}x${CROP} px, $WORKERS workers, schedule sized to $MINUTES minutes)"
rm -rf "$RUN"  # each run of this script is a new fine-tune from $start; the last one's history is in $OUT
$PY -m training.train --run "$RUN" --widths "32,$WIDTH" --recipe "$RECIPE" "${augment[@]}" --steps "$STEPS" \
    --crop "$CROP" --batch "$BATCH" --lr "$LR" --warmup 100 --eval-every 100000000 --device "$DEVICE" \
    --precision auto --minutes "$MINUTES" --workers "$WORKERS" --init-from "$start" || exit 1
cp "$RUN/history.jsonl" "$OUT/history.jsonl"

echo "== export and evaluate every held-out family, then the train/held-out gap"
rm -f "$OUT/weights.safetensors"
$PY -m training.train --run "$RUN" --export "$OUT/weights.safetensors" || exit 1
rm -f "$RUN/last.pt"  # optimizer state: the exported weights resume the run (--init-from)
$PY -m training.evaluate --weights "$OUT/weights.safetensors" --output "$OUT/eval" --force
$PY -m training.evaluate --weights "$OUT/weights.safetensors" --output "$OUT/eval" --train-gap --force
