"""``latentwire train-latent`` and ``latentwire eval-latent``: one latent experiment end to end.

train-latent runs every step (``--stage all``) or one of the workflow's two training jobs: Stage A
(``--stage a``, writing its whole state to ``OUT_DIR/state.pt``) and Stage B (``--stage b
--init-state``, continuing from it); split or not, the trajectory is the same.

eval-latent rebuilds the interlingua from the checkpoint and writes, for each receiver, the metrics
of the latent and its controls (shuffled Z, zero Z) and of each wire format of ``latent.wire.formats``
(int8 by default; int4, learned pq: see latentwire/latent/wire.py), plus the joint rescoring summary. System
names: ``latent:{exp}``, ``latent:{exp}:shuffled``, ``...:zero``, ``...:int8`` (``...:int4``, ``...:pq``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.data import read_split
from latentwire.encoders import source_model_name
from latentwire.evaluation.evaluate import EvalArgs, model_view, select_examples
from latentwire.evaluation.latent_eval import evaluate_latent
from latentwire.io import write_json
from latentwire.latent.build import build_interlingua
from latentwire.latent.prompts import encode_views
from latentwire.latent.wire import Wire
from latentwire.models import get_spec, load_model, load_registry
from latentwire.prompt import attach_shots, content_text, prompt_for
from latentwire.provenance import provenance
from latentwire.training.args import LatentRunArgs
from latentwire.training.loop import train

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, func in (("train-latent", run_train), ("eval-latent", run_eval)):
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("--registry", required=True)
        p.add_argument("--models", nargs="+", required=True)
        p.add_argument("--manifests", nargs="+", required=True)
        p.add_argument("--config-json", required=True, help="LatentRunArgs as JSON")
        p.add_argument("--exp", required=True, help="experiment name (used in system names)")
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--out-dir", required=True)
        p.add_argument(
            "--encoder-manifest",
            nargs="?",
            default=None,
            help="manifest of the encoder's source_model when it is not among --models (empty: none)",
        )
        if name == "train-latent":
            p.add_argument("--train", required=True)
            p.add_argument("--validation", required=True)
            p.add_argument(
                "--state-dir",
                default=None,
                help="resumable state, kept apart from the outputs (default: OUT_DIR/.state)",
            )
            p.add_argument(
                "--teacher-logits",
                nargs="*",
                default=None,
                help="teacher-logit caches for KD, one per receiver in --models order (latentwire "
                "teacher-logits); none: KD runs the text teacher every step",
            )
            p.add_argument(
                "--stage",
                choices=("all", "a", "b"),
                default="all",
                help="all: every step; a: Stage A only (train.stage_a_end() steps), its whole state to "
                "OUT_DIR/state.pt; b: the rest, starting from --init-state (a Stage A state.pt)",
            )
            p.add_argument("--init-state", default=None, help="--stage b: Stage A's state.pt")
            p.add_argument(
                "--init-checkpoint",
                nargs="?",
                default=None,
                help="pretraining checkpoint the encoder starts from (latentwire pretrain-encoder); empty: none",
            )
        else:
            p.add_argument("--checkpoint", required=True)
            p.add_argument("--data", required=True)
            p.add_argument("--shots-from", default=None, help="parquet of the TRAIN split (k-shot)")
            p.add_argument(
                "--fit-data",
                nargs="?",
                default=None,
                help="train split whose texts fit a learned wire quantizer (latent.wire.formats: pq)",
            )
        p.set_defaults(func=func)


def shots_source(args):
    """The train split k-shot examples are drawn from (train-latent's / add-receiver's --train,
    eval-latent's / eval-added-receiver's --shots-from), read only when shots are needed; or None."""
    path = getattr(args, "train", None) or getattr(args, "shots_from", None)
    return (lambda: read_split(path)) if path else None


def _setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    run = from_dict(LatentRunArgs, json.loads(args.config_json), where="latent")
    reg = load_registry(args.registry)
    if len(args.manifests) != len(args.models):
        raise ConfigError(f"--manifests: {len(args.manifests)} files for {len(args.models)} --models")
    specs = [get_spec(reg, m, args.registry, "--models") for m in args.models]
    run.prompt = attach_shots(run.prompt, specs, shots_source(args))
    lms = [load_model(spec, man, device=run.eval.device) for spec, man in zip(specs, args.manifests)]
    resolved = {"run": to_dict(run), "models": {m: to_dict(reg[m]) for m in args.models}, "exp": args.exp}
    resolved["prompts"] = {m: to_dict(prompt_for(reg[m], run.prompt)) for m in args.models}
    return run, lms, resolved


def _encoder_sources(args, run, resolved: dict) -> list:
    """The encoder's source model when it is not a receiver, loaded from --encoder-manifest."""
    name = source_model_name(run.latent.encoder)
    if name is None or name in args.models:
        return []
    reg = load_registry(args.registry)
    if name not in reg or not args.encoder_manifest:
        raise ConfigError(
            f"encoder.source_model {name!r}: not a receiver, so it needs a registry entry and --encoder-manifest"
        )
    resolved["encoder_model"] = to_dict(reg[name])
    return [load_model(reg[name], args.encoder_manifest, device=run.eval.device)]


def run_train(args: argparse.Namespace) -> int:
    """train the encoder and adapters of one latent experiment"""
    if (args.stage == "b") != bool(args.init_state):  # before any model loads
        raise ConfigError("--init-state: needed by --stage b, and only there")
    run, lms, resolved = _setup(args)
    if args.teacher_logits and len(args.teacher_logits) != len(args.models):
        raise ConfigError(f"--teacher-logits: {len(args.teacher_logits)} files for {len(args.models)} models")
    resolved["teacher_logits"] = args.teacher_logits
    resolved["init_checkpoint"] = args.init_checkpoint
    split = {"stop_at": run.train.stage_a_end(), "handoff": Path(args.out_dir) / "state.pt"}
    stage = split if args.stage == "a" else {"init_state": args.init_state}
    summary = train(
        lms,
        run,
        read_split(args.train),
        read_split(args.validation),
        args.out_dir,
        lms[0].device,
        teacher_paths=args.teacher_logits,
        sources=_encoder_sources(args, run, resolved),
        state_dir=args.state_dir,
        init_from=args.init_checkpoint,
        **stage,
    )
    write_json(Path(args.out_dir) / "run.json", {"summary": summary, "provenance": provenance(resolved)})
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """evaluate a trained latent experiment with controls and joint rescoring"""
    run, lms, resolved = _setup(args)
    il = build_interlingua(run.latent, lms, lms[0].device, _encoder_sources(args, run, resolved))
    il.load_trainable_state_dict(load_file(args.checkpoint))
    il.eval()
    wire = _fit_wire(args, run, il)  # before memoizing: the train texts need not be remembered
    examples = select_examples(read_split(args.data), run.eval)
    evaluate_latent(
        il, lms, run, examples, args.out_dir, f"latent:{args.exp}", provenance(resolved), wire=wire
    )
    return 0


def _fit_wire(args, run: LatentRunArgs, il) -> Wire:
    """The wire formats of this evaluation; a learned quantizer is fitted on TRAIN-split texts."""
    wire = Wire(run.latent.wire, run.latent.encoder.d_z)
    if "pq" in run.latent.wire.formats:
        if not args.fit_data:
            raise SystemExit("latent.wire.formats has pq: pass the train split as --fit-data")
        fit = select_examples(read_split(args.fit_data), EvalArgs(n_examples=run.latent.wire.pq_fit_examples))
        views = [model_view(e) for e in fit]
        wire.fit(
            lambda vs: encode_views(il, vs, run.prompt)[0],
            views,
            run.eval.batch_size,
            lambda vs: il.filled([content_text(v, run.prompt) for v in vs]),
        )
    return wire
