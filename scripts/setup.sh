#!/usr/bin/env bash
# Create .venv (if needed) and install banet-deploy with its export, CPU, OpenVINO, video, dev, serve, rtx and batch
# extras (rtx: TensorRT for RTX from PyPI, about 260 MB, which builds real engines for RTX GPUs without a GPU;
# batch: Ray Data for python -m serving.batch, about 130 MB of wheels, 460 MB installed, 15 s).
# torch is pinned to the CPU build 2.13.0: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[export,cpu,openvino,video,heif,rosbag,dev,serve,rtx,batch]"
# onnxruntime-web (WebAssembly ONNX Runtime, what browsers run; 168 MB in apps/web/node_modules) for the app graphs'
# browser check (export/to_app.py --check-web, tests/export/test_app_graph.py), where Node.js and npm are installed.
if command -v npm >/dev/null && command -v node >/dev/null; then
    npm ci --prefix apps/web --no-audit --no-fund --ignore-scripts --loglevel=error
else
    echo "note: no Node.js/npm here: onnxruntime-web (apps/web) not installed; its checks will be skipped"
fi
echo "banet-deploy installed in $(pwd)/.venv"
