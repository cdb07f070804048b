"""``latentwire teacher-logits``: cache one model's text-teacher top-k logits on one split (for KD)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from latentwire.config import from_dict, to_dict
from latentwire.data import read_split
from latentwire.evaluation.evaluate import EvalArgs, select_examples
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import attach_shots, prompt_for
from latentwire.provenance import provenance
from latentwire.training.teacher import TeacherRunArgs, compute_teacher_topk, save_teacher_cache, teacher_meta

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher-logits", help="cache the text teacher's top-k answer logits (KD)")
    p.add_argument("--registry", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--data", required=True, help="parquet of the split to cache (the training split)")
    p.add_argument("--config-json", required=True, help="TeacherRunArgs as JSON")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--out", required=True, help="cache file (.safetensors)")
    p.add_argument("--meta", required=True, help="JSON copy of the cache's metadata + provenance")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(TeacherRunArgs, json.loads(args.config_json), where="teacher")
    spec = get_spec(load_registry(args.registry), args.model, args.registry)
    lm = load_model(spec, args.manifest, device=cfg.device)
    frame = read_split(args.data)
    cfg.prompt = attach_shots(cfg.prompt, [spec], frame)  # k-shot: --data is the train split
    examples = select_examples(frame, EvalArgs(n_examples=0))  # every example, in file order
    tensors = compute_teacher_topk(lm, examples, cfg.prompt, cfg.teacher)
    prompt = prompt_for(spec, cfg.prompt)  # the model's own prompt: what training checks
    meta = teacher_meta(spec.name, ",".join(sorted(set(frame["split"]))), tensors, prompt)
    resolved = {"teacher": to_dict(cfg), "model": to_dict(spec), "data": str(Path(args.data))}
    resolved["prompt"] = to_dict(prompt)
    ids = [str(e["id"]) for e in examples]
    save_teacher_cache(args.out, tensors, ids, meta, args.meta, provenance(resolved))
    log.info("%s: teacher top-%d logits of %d examples -> %s", spec.name, meta["top_k"], len(ids), args.out)
    return 0
