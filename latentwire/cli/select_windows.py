"""``latentwire select-windows``: the tokens a trained ``select`` checkpoint keeps, for ``select-text-M``.

Rebuilds only the encoder of a latent experiment from its checkpoint (the scorer alone, no gold) and
writes one JSONL record per example: ``{"id", "text", "ids", "spans", "n_head", "source_model"}``
(see :meth:`latentwire.encoders.select.SelectEncoder.kept_tokens`). The ``select-text-M`` baseline and
its tuned ceiling feed those tokens to each receiver as ordinary text.
"""

from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import load_file

from latentwire.config import ConfigError, from_dict
from latentwire.data import read_split
from latentwire.encoders import build_encoder, source_model_name
from latentwire.encoders.core import load_trainable_state_dict
from latentwire.evaluation.evaluate import EvalArgs, model_view, select_examples
from latentwire.io import write_jsonl
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import content_text
from latentwire.training.args import LatentRunArgs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select-windows", help="kept tokens of a trained select encoder, per example")
    p.add_argument("--registry", required=True)
    p.add_argument("--manifest", required=True, help="manifest of the encoder's source model")
    p.add_argument("--config-json", required=True, help="the experiment's LatentRunArgs as JSON")
    p.add_argument("--n-models", type=int, required=True, help="receivers of the experiment (slot count)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="parquet of one split")
    p.add_argument(
        "--eval-json", nargs="?", default="", help="EvalArgs selecting a subset (empty: every row)"
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    run_args = from_dict(LatentRunArgs, json.loads(args.config_json), where="latent")
    latent = run_args.latent
    source = source_model_name(latent.encoder)
    if latent.encoder.name != "select" or source is None:
        raise ConfigError(
            f"latent.encoder.name: the experiment's encoder is {latent.encoder.name!r}, not select"
        )
    spec = get_spec(load_registry(args.registry), source, args.registry, "latent.encoder.source_model")
    lm = load_model(spec, args.manifest, device=run_args.eval.device)
    enc = build_encoder(latent.encoder, latent.total_slots(args.n_models), {source: lm}).to(lm.device)
    sd = load_file(args.checkpoint)
    load_trainable_state_dict(enc, {k[8:]: v for k, v in sd.items() if k.startswith("encoder.")})
    enc.eval()
    df = read_split(args.data)
    ev = from_dict(EvalArgs, json.loads(args.eval_json), where="eval") if args.eval_json else None
    examples = select_examples(df, ev) if ev else select_examples(df, EvalArgs(n_examples=0))
    rows = []
    for start in range(0, len(examples), 16):
        chunk = examples[start : start + 16]
        texts = [content_text(model_view(e), run_args.prompt) for e in chunk]
        for e, t, kept in zip(chunk, texts, enc.kept_tokens(texts)):
            rows.append({"id": e["id"], "text": t, **kept, "source_model": source})
    write_jsonl(args.out, rows)
    return 0
