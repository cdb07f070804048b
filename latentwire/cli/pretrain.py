"""``latentwire pretrain-encoder``: pretrain an encoder + projectors through the frozen receivers.

Continuation + reconstruction on the train split's contexts (see :mod:`latentwire.training.pretrain`); the
validation / test splits are read only to refuse any of their articles. Writes
``encoder.safetensors`` (what a fine-tuning experiment naming this run starts from), the step log,
a summary and ``run.json`` (resolved config + provenance).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from latentwire.config import from_dict, to_dict
from latentwire.data import read_split
from latentwire.encoders import source_model_name
from latentwire.io import write_json
from latentwire.latent.build import build_interlingua
from latentwire.models import load_model, load_registry
from latentwire.provenance import provenance
from latentwire.training.pretrain import PretrainRunArgs, pretrain, pretrain_contexts

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain-encoder", help="pretrain an encoder (continuation + reconstruction)")
    p.add_argument("--registry", required=True)
    p.add_argument("--models", nargs="+", required=True, help="the frozen receivers")
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--encoder-manifest", nargs="?", default=None, help="source model's, if not a receiver")
    p.add_argument("--config-json", required=True, help="PretrainRunArgs as JSON")
    p.add_argument("--train", required=True, help="the train split (parquet)")
    p.add_argument("--held-out", nargs="+", required=True, help="validation / test splits: refused")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(PretrainRunArgs, json.loads(args.config_json), where="pretrain")
    torch.manual_seed(cfg.pretrain.seed)
    reg = load_registry(args.registry)
    lms = [load_model(reg[m], man, device=cfg.device) for m, man in zip(args.models, args.manifests)]
    resolved = {"pretrain": to_dict(cfg), "models": {m: to_dict(reg[m]) for m in args.models}}
    sources = []
    name = source_model_name(cfg.latent.encoder)
    if name is not None and name not in args.models:
        if not args.encoder_manifest:
            raise SystemExit(f"encoder.source_model {name!r}: not a receiver, so it needs --encoder-manifest")
        resolved["encoder_model"] = to_dict(reg[name])
        sources = [load_model(reg[name], args.encoder_manifest, device=cfg.device)]
    contexts = pretrain_contexts(read_split(args.train), [read_split(p) for p in args.held_out])
    il = build_interlingua(cfg.latent, lms, lms[0].device, sources)
    summary = pretrain(lms, il, cfg, contexts, args.out_dir, sources)
    write_json(Path(args.out_dir) / "run.json", {"summary": summary, "provenance": provenance(resolved)})
    log.info("pretrained on %d train contexts: %s", summary["contexts"], summary["heldout_after"])
    return 0
