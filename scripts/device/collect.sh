#!/usr/bin/env bash
# On the GPU machine: what the background runs have made so far, without weights: each run folder
# /tmp/lw* as $OUT/res-<folder>.tgz (res.tgz for /tmp/lw) and the bench's JSON as $OUT/bench.tgz, with
# the tail of each Snakemake output. Call it in every polling call: the machine goes back 30 s after a
# call ends, and with it everything under /tmp.
for d in /tmp/lw /tmp/lw[0-9]*; do
  [ -f "$d/snakemake.out" ] || continue
  name=res$(basename "$d" | sed 's/^lw//; s/^./-&/').tgz
  (cd "$d" && tar --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' --exclude='*.tmp' -czf "$OUT/$name" \
    results logs benchmarks snakemake.out 2>/dev/null)
  echo "$d: $name $(stat -c %s "$OUT/$name") bytes"
  grep -E "of [0-9]+ steps|Error|error" "$d/snakemake.out" | tail -3
done
if [ -d /tmp/bench ]; then
  tar -C /tmp -czf "$OUT/bench.tgz" bench && tail -n 4 /tmp/bench/bench.out
fi
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
