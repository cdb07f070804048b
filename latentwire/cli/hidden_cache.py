"""``latentwire hidden-cache``: cache an experiment's encoder source model's layer-L hidden states on one split.

The model, layer and token limit come from the experiment's ``latent.encoder`` (``source_model``,
``source_layer``, ``max_enc_tokens``), the texts from its prompt contract, so the cache holds what
a frozen ``lm-hidden`` encoder of that experiment reads.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.data import read_split
from latentwire.encoders.hidden_cache import cache_meta, compute_hidden_cache, save_hidden_cache
from latentwire.evaluation.evaluate import EvalArgs, model_view, select_examples
from latentwire.io import write_json
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import content_text
from latentwire.provenance import config_hash, provenance
from latentwire.training.args import LatentRunArgs

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hidden-cache", help="cache the encoder source model's hidden states on a split")
    p.add_argument("--registry", required=True)
    p.add_argument("--manifest", required=True, help="manifest of latent.encoder.source_model")
    p.add_argument("--data", required=True, help="parquet of the split to cache")
    p.add_argument("--config-json", required=True, help="LatentRunArgs as JSON (the experiment)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--out", required=True, help="cache file (.safetensors)")
    p.add_argument("--meta", required=True, help="JSON copy of the cache's metadata + provenance")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    latent = from_dict(LatentRunArgs, json.loads(args.config_json), where="latent")
    enc = latent.latent.encoder
    if not enc.source_model:
        raise ConfigError("latent.encoder.source_model: not set (a hidden cache is of the source model)")
    spec = get_spec(load_registry(args.registry), enc.source_model, args.registry, "encoder.source_model")
    lm = load_model(spec, args.manifest, device=latent.eval.device)
    examples = select_examples(read_split(args.data), EvalArgs(n_examples=0))  # every example, file order
    texts = [content_text(model_view(e), latent.prompt) for e in examples]
    tensors = compute_hidden_cache(lm, texts, enc.source_layer, enc.max_enc_tokens, args.batch_size)
    meta = cache_meta(lm, enc.source_layer, enc.max_enc_tokens, tensors)
    meta["prompt_hash"] = config_hash(to_dict(latent.prompt))
    save_hidden_cache(args.out, tensors, [str(e["id"]) for e in examples], meta)
    resolved = {"latent": to_dict(latent), "model": to_dict(spec), "data": args.data}
    write_json(args.meta, {**meta, "provenance": provenance(resolved)})
    log.info("%s layer %d: %d examples -> %s", spec.name, meta["layer"], meta["n_examples"], args.out)
    return 0
