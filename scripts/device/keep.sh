#!/usr/bin/env bash
# On the GPU machine: keep the model pieces carried in this call (.xfer/m[0-9][0-9]) under /tmp/xfer.
mkdir -p /tmp/xfer
for f in .xfer/m[0-9][0-9] .xfer/md5; do [ -e "$f" ] && cp "$f" /tmp/xfer/; done
ls /tmp/xfer | tr '\n' ' '; echo
