#!/usr/bin/env bash
# On the GPU machine, after setup.sh: the hero bench (docs/benchmarks.md) in the background, so the
# model pieces can travel meanwhile; launch.sh waits for it before starting Snakemake. Each row's JSON
# lands in /tmp/bench, which collect.sh returns.
#   ROWS="hero nocompile" bash scripts/device/bench.sh
set -euo pipefail
. /tmp/env.sh
mkdir -p /tmp/bench
rm -rf /tmp/lw-bench && mkdir -p /tmp/lw-bench
tar --exclude=./.whl --exclude=./.xfer --exclude=./.git -cf - . | tar -C /tmp/lw-bench -xf -
cd /tmp/lw-bench
setsid nohup bash scripts/bench_ablations.sh /tmp/bench ${ROWS:-hero} > /tmp/bench/bench.out 2>&1 < /dev/null &
echo $! > /tmp/bench/pid
echo "bench started (pid $(cat /tmp/bench/pid)): rows ${ROWS:-hero}"
