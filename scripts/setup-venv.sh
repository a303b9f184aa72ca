#!/usr/bin/env bash
# Create or reuse the virtual environment at .venv with peftbench (editable) and its test tools.
# torch goes in first, pinned to the CPU build on this kind of machine: installing peft or
# transformers before it would pull a multi-GB CUDA build. Users with a GPU build keep theirs,
# because the package itself only asks for torch>=2.6.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch (CPU build) first"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==${PEFTBENCH_TORCH_VERSION:-2.13.0}"
fi

# Reinstall only when the package metadata changed since the last install.
stamp=.venv/.peftbench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing peftbench and its dependencies into .venv"
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi
