#!/usr/bin/env bash
# On the lent GPU machine, first call: install the carried wheels into /tmp/site and put `latentwire`
# and `snakemake` on PATH through /tmp/env.sh. Keeps any model piece carried in this call.
# Run from the repository root there:  bash scripts/device/setup.sh
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/bin /tmp/xfer
cat > /tmp/env.sh <<'ENV'
export PYTHONPATH=/tmp/lw:/tmp/site PATH=/tmp/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
ENV
printf '#!/bin/sh\nexec python3 -m latentwire.cli.main "$@"\n' > /tmp/bin/latentwire
printf '#!/bin/sh\nexec python3 -m snakemake "$@"\n' > /tmp/bin/snakemake
chmod +x /tmp/bin/*
bash scripts/device/keep.sh
. /tmp/env.sh
python3 -c 'import torch, transformers, peft, snakemake; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "snakemake", snakemake.__version__, "gpu", torch.cuda.get_device_name())'
