"""``latentwire tune-text`` and ``latentwire eval-tuned``: a text-side ceiling trained like a latent.

tune-text trains LoRA on one receiver reading ``text`` or ``select-text-M`` prompts
(:mod:`latentwire.training.text_tuning`); eval-tuned rebuilds it from ``best.safetensors`` and evaluates it
exactly like the baseline it reads, as system ``{kind}-tuned-s{seed}``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentwire.config import from_dict, to_dict
from latentwire.data import read_split
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.evaluate import evaluate, select_examples
from latentwire.heads.lora import apply_lora, load_lora_state_dict
from latentwire.io import read_jsonl, write_json, write_jsonl
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import attach_shots, prompt_for
from latentwire.provenance import provenance
from latentwire.training.text_tuning import TunedArgs, tune

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, func in (("tune-text", run_tune), ("eval-tuned", run_eval)):
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("--registry", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--manifest", required=True)
        p.add_argument("--config-json", required=True, help="TunedArgs as JSON")
        p.add_argument("--windows", nargs="*", default=[], help="select-windows files (select-text only)")
        p.add_argument("--threads", type=int, default=0)
        if name == "tune-text":
            p.add_argument("--train", required=True)
            p.add_argument("--validation", required=True)
            p.add_argument("--out-dir", required=True)
            p.add_argument(
                "--state-dir",
                default=None,
                help="resumable state, kept apart from the outputs (default: OUT_DIR/.state)",
            )
        else:
            p.add_argument("--checkpoint", required=True)
            p.add_argument("--data", required=True)
            p.add_argument("--shots-from", default=None, help="parquet of the TRAIN split (k-shot)")
            p.add_argument("--predictions", required=True)
            p.add_argument("--metrics", required=True)
        p.set_defaults(func=func)


def load_windows(paths: list[str]) -> dict[str, dict] | None:
    """content text -> select-windows record, over every file given (None without files)."""
    paths = [p for p in paths if p]  # Snakemake renders an empty input list as one empty word
    if not paths:
        return None
    return {r["text"]: r for path in paths for r in read_jsonl(path)}


def _setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(TunedArgs, json.loads(args.config_json), where="tuned")
    spec = get_spec(load_registry(args.registry), args.model, args.registry)
    # k-shot examples: the train split only (tune-text's --train, eval-tuned's --shots-from)
    shots_from = getattr(args, "train", None) or getattr(args, "shots_from", None)
    cfg.prompt = attach_shots(cfg.prompt, [spec], (lambda: read_split(shots_from)) if shots_from else None)
    lm = load_model(spec, args.manifest, device=cfg.eval.device)
    resolved = {"tuned": to_dict(cfg), "model": to_dict(spec), "windows": args.windows}
    resolved["prompt"] = to_dict(prompt_for(spec, cfg.prompt))  # this model's prompt, as run
    return cfg, lm, resolved


def run_tune(args: argparse.Namespace) -> int:
    """train a LoRA text ceiling on one receiver"""
    cfg, lm, resolved = _setup(args)
    train_df, val_df = read_split(args.train), read_split(args.validation)
    windows = load_windows(args.windows)
    summary = tune(lm, cfg, train_df, val_df, args.out_dir, windows, state_dir=args.state_dir)
    write_json(Path(args.out_dir) / "run.json", {"summary": summary, "provenance": provenance(resolved)})
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """evaluate a trained LoRA text ceiling like its baseline"""
    cfg, lm, resolved = _setup(args)
    apply_lora(lm.model, cfg.lora)
    load_lora_state_dict(lm.model, load_file(args.checkpoint))
    system = f"{cfg.system}-s{cfg.train.seed}"
    examples = select_examples(read_split(args.data), cfg.eval)
    maker = text_prompt_maker(lm, cfg.prompt, cfg.kind, load_windows(args.windows))
    rows, summary = evaluate(lm, examples, maker, cfg.prompt, cfg.eval, desc=f"{args.model}/{system}")
    summary.update(
        {"system": system, "kind": "tuned", "seed": cfg.train.seed, "provenance": provenance(resolved)}
    )
    write_jsonl(args.predictions, rows)
    write_json(args.metrics, summary)
    log.info("%s %s: EM %.3f F1 %.3f", args.model, system, summary["em"], summary["f1"])
    return 0
