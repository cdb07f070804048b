"""``latentwire model``: materialize one registry model (assemble/verify/export once) and write its manifest."""

from __future__ import annotations

import argparse
import logging

from latentwire.models import get_spec, load_model, load_registry, materialize

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="materialize a registry model into a cache folder")
    p.add_argument("--registry", required=True, help="config/models.yaml")
    p.add_argument("--name", required=True, help="registry entry")
    p.add_argument("--cache-dir", required=True, help="folder for the export and manifest.json")
    p.add_argument("--check-load", action="store_true", help="load once to fail fast on a bad export")
    p.set_defaults(func=run)
    add_tiny_parser(sub)


def run(args: argparse.Namespace) -> int:
    spec = get_spec(load_registry(args.registry), args.name, args.registry, "--name")
    manifest = materialize(spec, args.cache_dir)
    if args.check_load:
        lm = load_model(spec, f"{args.cache_dir}/manifest.json", device="cpu")
        n = sum(p.numel() for p in lm.model.parameters())
        log.info("model %s: %.1fM parameters, chat template: %s", spec.name, n / 1e6, lm.uses_chat_template)
    log.info("model %s ready: %s", spec.name, manifest["load_path"])
    return 0


def add_tiny_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-model", help="build a tiny random model + tokenizer (tests, .test workflow)")
    p.add_argument("--family", required=True, choices=["llama", "qwen2", "gemma"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    from latentwire.models.tiny import save_tiny

    save_tiny(args.family, args.out, seed=args.seed)
    log.info("tiny %s model written to %s", args.family, args.out)
    return 0
