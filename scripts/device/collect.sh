#!/usr/bin/env bash
# On the GPU machine: what the background run has made so far, without weights, into $OUT/res.tgz,
# and the tail of Snakemake's output. Call it in every polling call: the machine goes back 30 s
# after a call ends, and with it everything under /tmp.
cd /tmp/lw || exit 1
tar --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' -czf "$OUT/res.tgz" \
  results logs benchmarks snakemake.out 2>/dev/null
ls -la "$OUT/res.tgz" | awk '{print "res.tgz", $5, "bytes"}'
grep -E "of [0-9]+ steps|Error|error" snakemake.out | tail -4
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
