#!/usr/bin/env bash
# The embedded default, end to end: install, run the Snakemake pipeline locally, print the table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
snakemake --profile profiles/local "$@"
echo
cat results/tables/results.md
echo "[run_default] finished in $(( $(date +%s) - start )) s; tables in results/tables/, logs in logs/"
snakemake --profile profiles/local --report results/report.html
echo "[run_default] HTML report: results/report.html (hypotheses, intervals, figures)"
