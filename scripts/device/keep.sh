#!/usr/bin/env bash
# On the GPU machine: keep the model pieces carried in this call (.xfer/m??) under /tmp/xfer.
mkdir -p /tmp/xfer
for f in .xfer/m??; do [ -e "$f" ] && cp "$f" /tmp/xfer/; done
ls /tmp/xfer | tr '\n' ' '; echo
