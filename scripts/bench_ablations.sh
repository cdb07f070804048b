#!/usr/bin/env bash
# "What each optimization bought" (issue #7, docs/benchmarks.md): the hero bench, then one run per
# optimization with that one setting changed, each writing its JSON into OUT_DIR. GPU only.
#   bash scripts/bench_ablations.sh OUT_DIR [row ...]      rows: hero nocompile profile encbf16 encbf16-lean encbf16-nocompile eager ktoken ckpt padded nf4 pretrain pretrain-b64 pooled-qa
# hero is torch.compile'd (the default on CUDA) and spends its first minutes compiling in the warm-up;
# nocompile is the same without it. nf4 needs bitsandbytes.
set -uo pipefail
out=${1:?usage: bench_ablations.sh OUT_DIR [row ...]}
shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(hero nocompile eager ktoken ckpt padded)
mkdir -p "$out"
enc='"latent": {"encoder": {"name": "byte"}}'   # needs no files; the same encoder in every row
skip='"phases": ["ceiling", "step"]'           # eval is timed once, in the hero row
# pretrain rows: config/gpu-pooled-long.yaml's long-pt4 (pooled-lm on Qwen2.5-Coder-0.5B, PF 4, both
# default receivers, 80 % continuation) in the default's shapes, random weights, uncompiled, profiled
pooled='"encoder": {"name": "pooled-lm", "source_model": "qwen2.5-coder-0.5b", "d_z": 896, "drop_last": 2, "train_layers": -1, "bidirectional": false, "pool_factor": 4, "max_enc_tokens": 384}, "adapter": {"kind": "linear2", "hidden": 2048, "dropout": 0.0}'
pt='"shapes": "default", "phases": ["pretrain"], "slots": 64, "profile_steps": 3, "run": {"latent": {"n_shared": 64, "n_private": 0, '"$pooled"'}}'
ptargs='"lr": 0.00005, "head_lr_scale": 2.0, "continuation_share": 0.8, "max_segment_words": 160, "continuation_tokens": 64, "reconstruct_tokens": 256'
for row in "${rows[@]}"; do
  case $row in
    hero) cfg="{\"run\": {$enc}}" ;;
    eager) cfg="{$skip, \"attn\": \"eager\", \"run\": {$enc}}" ;;
    ktoken) cfg="{$skip, \"run\": {$enc, \"loss\": {\"w_ktoken\": 0.5}}}" ;;
    ckpt) cfg="{$skip, \"run\": {$enc, \"train\": {\"grad_checkpointing\": true}}}" ;;
    padded) cfg="{$skip, \"answer_spread\": 12, \"run\": {$enc}}" ;;
    nocompile) cfg="{$skip, \"compile\": false, \"run\": {$enc}}" ;;
    encbf16) cfg="{$skip, \"run\": {$enc, \"train\": {\"encoder_autocast\": true}}}" ;;  # the encoder under bf16 autocast
    encbf16-lean) cfg="{$skip, \"full_prompt_ceiling\": false, \"run\": {$enc, \"train\": {\"encoder_autocast\": true}}}" ;;  # encbf16 without the whole-row ceiling (saves its compile)
    encbf16-nocompile) cfg="{$skip, \"compile\": false, \"run\": {$enc, \"train\": {\"encoder_autocast\": true}}}" ;;  # the same, uncompiled (no warm-up compile)
    profile) cfg="{$skip, \"compile\": false, \"profile_steps\": 3, \"run\": {$enc}}" ;;  # where the step's time goes
    nf4) cfg="{$skip, \"nf4\": true, \"run\": {$enc}}" ;;
    pretrain) cfg="{$pt, \"pretrain\": {\"batch_size\": 32, $ptargs}}" ;;  # the pretraining step (#14)
    pretrain-b64) cfg="{$pt, \"pretrain\": {\"batch_size\": 64, $ptargs}}" ;;  # the same at twice the batch
    pooled-qa) cfg="{\"shapes\": \"default\", \"phases\": [\"ceiling\", \"step\"], \"slots\": 64, \"batch_size\": 32, \"compile\": false, \"profile_steps\": 3, \"run\": {\"latent\": {\"n_shared\": 64, \"n_private\": 0, $pooled}}}" ;;  # its QA fine-tuning step (Stage B), profiled
    *) echo "unknown row $row (hero nocompile profile encbf16 encbf16-lean encbf16-nocompile eager ktoken ckpt padded nf4 pretrain pretrain-b64 pooled-qa)" >&2; exit 2 ;;
  esac
  echo "== $row: $cfg"
  python3 -m latentwire.cli.main bench --config-json "$cfg" --out "$out/$row.json" 2>&1 | tail -n 14
done
