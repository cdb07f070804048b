"""``latentwire baseline``: evaluate one text-side baseline for one model on one split."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from latentwire.cli.tuned import load_windows
from latentwire.config import from_dict, to_dict
from latentwire.data import read_split
from latentwire.evaluation.baselines import BaselineArgs, parse_baseline, text_prompt_maker
from latentwire.evaluation.comparators import UPPER_BOUNDS
from latentwire.evaluation.evaluate import evaluate, model_view, select_examples
from latentwire.io import write_json, write_jsonl
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import attach_shots, content_text, prompt_for
from latentwire.provenance import provenance

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="text / token-budget / closed-book baseline")
    p.add_argument("--registry", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--data", required=True, help="parquet of the evaluation split")
    p.add_argument("--config-json", required=True, help="BaselineArgs as JSON")
    p.add_argument("--windows", nargs="*", default=[], help="select-windows files (select-text-M only)")
    p.add_argument("--shots-from", default=None, help="parquet of the TRAIN split (k-shot prompts)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--predictions", required=True)
    p.add_argument("--metrics", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(BaselineArgs, json.loads(args.config_json), where="baseline")
    spec = get_spec(load_registry(args.registry), args.model, args.registry)
    train = (lambda: read_split(args.shots_from)) if args.shots_from else None
    cfg.prompt = attach_shots(cfg.prompt, [spec], train)
    lm = load_model(spec, args.manifest, device=cfg.eval.device)
    examples = select_examples(read_split(args.data), cfg.eval)
    kind, _ = parse_baseline(cfg.name)
    # the oracle upper bound reads the gold answers (by content text); no other kind receives them
    gold = (
        {content_text(model_view(e), cfg.prompt): e["answers"] for e in examples}
        if kind in UPPER_BOUNDS
        else None
    )
    maker = text_prompt_maker(lm, cfg.prompt, cfg.name, load_windows(args.windows), gold)
    rows, summary = evaluate(lm, examples, maker, cfg.prompt, cfg.eval, desc=f"{args.model}/{cfg.name}")
    resolved = {
        "baseline": to_dict(cfg),
        "model": to_dict(spec),
        "data": str(Path(args.data)),
        "windows": args.windows,
    }
    resolved["prompt"] = to_dict(prompt_for(spec, cfg.prompt))  # this model's prompt, as run
    summary.update({"system": cfg.name, "kind": "baseline", "provenance": provenance(resolved)})
    summary["upper_bound"] = kind in UPPER_BOUNDS  # reads gold: a bound, never a system
    write_jsonl(args.predictions, rows)
    write_json(args.metrics, summary)
    log.info(
        "%s %s: EM %.3f F1 %.3f NLL %.3f (n=%d)",
        args.model,
        cfg.name,
        summary["em"],
        summary["f1"],
        summary["nll_per_token"],
        summary["n"],
    )
    return 0
