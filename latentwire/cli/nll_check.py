"""``latentwire nll-check``: the NLL/token of a packaged model's text prompts, as one JSON on stdout.

For the first ``--n`` questions of a SQuAD file (file order: the same questions everywhere), the
gold-answer NLL is computed by hand from one plain forward and through the pipeline's scoring
(:mod:`latentwire.evaluation.nll_check`). Run it on two machines and compare ``nll_per_token_pipeline``: under
the supported versions the numbers agree to 1e-3 (fp32, the default ``--dtype``); ``end_of_answer`` shows the token every
answer ends in, the usual suspect when they do not.

    latentwire nll-check --manifest resources/models/qwen2.5-coder-0.5b/manifest.json --n 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from latentwire.data import read_squad
from latentwire.evaluation.nll_check import nll_check
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import PromptArgs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nll-check", help="NLL/token of a model's text prompts on fixed SQuAD questions (JSON)"
    )
    p.add_argument("--registry", default="config/models.yaml")
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--manifest", required=True)
    p.add_argument("--squad", default="resources/squad-dev-v1.1.json.gz", help="SQuAD v1.1 JSON (.gz)")
    p.add_argument("--n", type=int, default=8, help="first N questions of the file")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights and compute dtype (default float32: the cross-machine comparison; auto = the registry's)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_spec(load_registry(args.registry), args.model, args.registry)
    if args.dtype != "auto":
        spec = dataclasses.replace(spec, dtype=args.dtype)
    lm = load_model(spec, args.manifest, device=args.device)
    examples = read_squad(args.squad)[: args.n]
    out = nll_check(lm, examples, PromptArgs(), batch_size=args.batch_size)
    print(json.dumps(out, indent=2))
    return 0
