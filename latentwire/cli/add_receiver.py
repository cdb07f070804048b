"""``latentwire add-receiver`` and ``latentwire eval-added-receiver``: a new receiver on a trained wire.

add-receiver trains only the newcomer's reading head on a finished experiment's frozen checkpoint
(:mod:`latentwire.training.extend`); eval-added-receiver evaluates the extended wire on the same path as
eval-latent: the newcomer with its controls and the int8 wire, the old receivers' latent again,
joint rescoring over all of them, and ``wire_check.json``: the old receivers' prediction rows
(``wire_check/{model}/predictions.jsonl``) compared with the experiment's own evaluation (timings
aside, they must be identical; the old receivers' systems stay the experiment's, so they are not
written as metrics here). System
names: ``latent:{exp}+{receiver}`` and its variants.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from latentwire.cli.latent import _encoder_sources, _setup, shots_source
from latentwire.config import from_dict, to_dict
from latentwire.data import read_split
from latentwire.evaluation.evaluate import select_examples
from latentwire.evaluation.latent_eval import evaluate_latent
from latentwire.evaluation.metrics import mean
from latentwire.io import read_jsonl, write_json, write_jsonl
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import attach_shots, prompt_for
from latentwire.provenance import provenance
from latentwire.training.extend import ExtendArgs, add_receiver, load_added

TIMINGS = ("prefill_s", "decode_s_per_token")  # the only row fields allowed to differ between runs


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, func in (("add-receiver", run_add), ("eval-added-receiver", run_eval)):
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("--registry", required=True)
        p.add_argument("--models", nargs="+", required=True, help="the experiment's receivers")
        p.add_argument("--manifests", nargs="+", required=True)
        p.add_argument("--receiver-manifest", required=True, help="manifest of the new receiver")
        p.add_argument("--config-json", required=True, help="the experiment's LatentRunArgs as JSON")
        p.add_argument("--extend-json", required=True, help="ExtendArgs as JSON (receiver, train, loss)")
        p.add_argument("--exp", required=True, help="the experiment's name")
        p.add_argument("--checkpoint", required=True, help="the experiment's best.safetensors")
        p.add_argument("--encoder-manifest", nargs="?", default=None)
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--out-dir", required=True)
        if name == "add-receiver":
            p.add_argument("--train", required=True)
            p.add_argument("--validation", required=True)
            p.add_argument("--teacher-logits", default=None, help="the newcomer's teacher-logit cache")
        else:
            p.add_argument("--extension-dir", required=True, help="add-receiver's --out-dir")
            p.add_argument("--data", required=True)
            p.add_argument("--reference-eval", default=None, help="the experiment's eval-latent --out-dir")
            p.add_argument("--shots-from", default=None, help="parquet of the TRAIN split (k-shot)")
        p.set_defaults(func=func)


def _load(args):
    run, wire_lms, resolved = _setup(args)
    ext = from_dict(ExtendArgs, json.loads(args.extend_json), where="extension")
    spec = get_spec(load_registry(args.registry), ext.receiver, args.registry, "extension.receiver")
    # the newcomer's k-shot prompt too: the shots are a prefix-stable draw (a larger k extends a
    # smaller one), so the wire receivers keep exactly the shots of the experiment's own runs
    run.prompt = attach_shots(run.prompt, [*(lm.spec for lm in wire_lms), spec], shots_source(args))
    new_lm = load_model(spec, args.receiver_manifest, device=run.eval.device)
    resolved.update({"exp": f"{args.exp}+{ext.receiver}", "source_exp": args.exp, "extension": to_dict(ext)})
    resolved["run"] = to_dict(run)
    resolved["models"][ext.receiver] = to_dict(spec)
    resolved["prompts"][ext.receiver] = to_dict(prompt_for(spec, run.prompt))  # its prompt, as run
    return run, ext, wire_lms, new_lm, resolved, _encoder_sources(args, run, resolved)


def run_add(args: argparse.Namespace) -> int:
    """train a new receiver's reading head on a trained experiment's frozen wire"""
    run, ext, wire_lms, new_lm, resolved, sources = _load(args)
    data = read_split(args.train), read_split(args.validation)
    out = add_receiver(
        run,
        ext,
        wire_lms,
        new_lm,
        args.checkpoint,
        *data,
        args.out_dir,
        new_lm.device,
        sources,
        args.teacher_logits,
    )
    write_json(Path(args.out_dir) / "run.json", {**out, "provenance": provenance(resolved)})
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """evaluate an extended wire: the newcomer with controls, old receivers unchanged, joint rescoring"""
    run, ext, wire_lms, new_lm, resolved, sources = _load(args)
    il, record = load_added(
        run, ext, wire_lms, new_lm, args.checkpoint, args.extension_dir, new_lm.device, sources
    )
    examples = select_examples(read_split(args.data), run.eval)
    old = [lm.spec.name for lm in wire_lms]  # their systems are the experiment's: rescored, not rewritten
    system = f"latent:{args.exp}+{ext.receiver}"
    prov = provenance(resolved)
    if ext.lora.rank:  # the newcomer's own LoRA: its rows name that head
        run = replace(run, latent=replace(run.latent, lora=ext.lora))
    rows = evaluate_latent(il, [*wire_lms, new_lm], run, examples, args.out_dir, system, prov, old)
    check: dict = {"extension": record, "old_receivers": {}, "provenance": prov}
    for name in old:
        path = Path(args.out_dir) / "wire_check" / name / "predictions.jsonl"
        write_jsonl(path, rows[name])
        entry: dict = {
            "n": len(rows[name]),
            "f1": mean([r["f1"] for r in rows[name]]),
            "predictions": str(path),
        }
        if args.reference_eval:  # both as written (JSON), timings aside
            ref = Path(args.reference_eval) / name / "latent" / "predictions.jsonl"
            entry["identical_to_reference"] = _untimed(read_jsonl(ref)) == _untimed(read_jsonl(path))
            if not entry["identical_to_reference"]:
                raise SystemExit(f"{name}: predictions differ from {ref}; the wire moved")
        check["old_receivers"][name] = entry
    write_json(Path(args.out_dir) / "wire_check.json", check)
    return 0


def _untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]
