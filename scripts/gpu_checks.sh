#!/usr/bin/env bash
# What only a GPU can show, in one call of at most about 5 minutes: the runtime's PyTorch path against the compute
# floor, real FP16 drift, GPU latency of the PyTorch variants, torch.compile last. Meant for a lent GPU machine
# (PyTorch, ONNX, ONNX Runtime, scikit-image, safetensors and tqdm preinstalled, no network), run from the
# repository root with the working tree copied there:
#
#   bash scripts/gpu_checks.sh [OUT]           # OUT defaults to out/gpu_checks
#   CPU_OK=1 bash scripts/gpu_checks.sh OUT    # dry run: every phase on the CPU at a tiny size (catches typos;
#                                              # the numbers mean nothing)
#
# Phases, in this order, each with its own time limit and its own files, so one that fails or runs out of time
# leaves the others (OUT/summary.txt lists each phase's exit status and seconds):
#   1. env          OUT/env.txt: GPU, driver, versions
#   2. roofline     OUT/roofline/roofline_<GPU>_<date>.{json,md}: Deblurrer(backend="torch", device="cuda") as
#                   apps run it: eager FP32 / FP16 / FP16+channels_last and the same through CUDA graphs (the
#                   default), the attention folded (the default), eager FP32 and graphs FP16 also as trained, at
#                   256x256, 720x1280, 1080x1920 batch 1; backend call, whole deblur() and graph replay alone;
#                   drift vs eager FP32 as trained in dB; the floor estimate (benchmarks.gpu_roofline)
#   3. drift        OUT/drift/drift_report.{json,md}: FP16 measured in real half precision on the GPU
#   4. bench        OUT/bench/: benchmarks.run's PyTorch systems (eager, fp16, channels_last, benchmark-local
#                   CUDA graphs, the runtime's "Deblurrer torch cuda (graphs...)" rows), no compile
#   5. compile      OUT/bench_compile/: torch.compile (inductor's default mode: compiles in seconds to a
#                   minute; max-autotune did not finish in 190 s) next to eager
# BUDGET_S (default 300) bounds the whole run: a phase gets at most what is left of it, and is skipped when
# less than 20 s is left. Commit what comes back with the device name; CI never depends on it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-out/gpu_checks}}
PY=${PY:-python3}
CPU_OK=${CPU_OK:-0}
BUDGET_S=${BUDGET_S:-300}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0
started=$SECONDS

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    $PY -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available()); print("onnxruntime", ort.__version__, ort.get_available_providers())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ "$CPU_OK" != 1 ]; then
    $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")' || exit 2
fi
: > "$OUT/summary.txt"

# phase NAME LIMIT_S COMMAND...: run with the smaller of LIMIT_S and the budget left; record exit status and time.
phase() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - started)))
    if [ "$left" -lt 20 ]; then
        echo "$name: skipped (budget of ${BUDGET_S} s spent)" | tee -a "$OUT/summary.txt"
        status=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit} s)"
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1 || rc=$?
    local took=$((SECONDS - t0))
    if [ "$rc" = 0 ]; then
        echo "$name: ok in ${took} s" | tee -a "$OUT/summary.txt"
    else
        [ "$rc" = 124 ] && why="time limit ${limit} s" || why="exit $rc"
        echo "$name: FAILED ($why) after ${took} s; see $OUT/$name.log" | tee -a "$OUT/summary.txt"
        status=1
    fi
}

if [ "$CPU_OK" = 1 ]; then  # dry run: tiny sizes, few repeats, short limits; one thread (on a busy machine
    export OMP_NUM_THREADS=1  # PyTorch's threads spinning against each other made a 32x32 call 1 s instead of 80 ms)
    export BANET_ENGINES=${BANET_ENGINES:-$OUT/engines}  # files the drift phase makes stay out of the checkout
    export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor}  # a killed compile leaves no torn file
    sizes=(32x32) roofline_args=(--cpu-ok --repeats 3 --warmup 0) drift_args=(--limit 1 --no-fp16)
    bench_args=(--sizes 32x32 --full-sizes --repeats 3 --warmup 0) compile_args=("${bench_args[@]}")
    limits=(90 60 60 120)
else
    sizes=(256x256 720x1280 1080x1920) roofline_args=(--repeats 30 --warmup 5) drift_args=(--full)
    bench_args=(--sizes 256x256 720x1280 1080x1920 --full-sizes 256x256 --repeats 30 --warmup 5)
    # torch.compile compiles once per shape (then once more for dynamic shapes): two sizes, the default network
    compile_args=(--sizes 256x256 1080x1920 --full-sizes --repeats 30 --warmup 5)
    # within BUDGET_S together (they were 435 s against 300: the last phases got what was left, and benchmarks.run
    # killed at its limit writes no rows); the roofline writes each row as it is measured, so it gets no more
    limits=(90 60 90 60)
fi

phase roofline "${limits[0]}" $PY -m benchmarks.gpu_roofline --sizes "${sizes[@]}" "${roofline_args[@]}" \
    --output "$OUT/roofline" --force
# the shipped FP32 and INT8 files: no export or quantisation inside the time limit (the FP16 rows are the point)
phase drift "${limits[1]}" $PY -m calibration.drift "${drift_args[@]}" --no-speed --force --output "$OUT/drift" \
    --onnx banet/weights/banet_default.onnx --int8 banet/weights/banet_default_int8_ort.onnx
phase bench "${limits[2]}" $PY -m benchmarks.run "${bench_args[@]}" --batches 1 --max-call-s 3 --no-plots \
    --only "torch eager" "torch fp16" "torch channels_last" "torch cudagraphs" "Deblurrer torch cuda*" \
    --output "$OUT/bench" --force
phase compile "${limits[3]}" $PY -m benchmarks.run "${compile_args[@]}" --batches 1 --max-call-s 3 --no-plots \
    --only "torch eager" "torch compile" --output "$OUT/bench_compile" --force

echo "total $((SECONDS - started)) s (budget ${BUDGET_S} s)" | tee -a "$OUT/summary.txt"
exit $status
