"""The ``latentwire`` console command: one subcommand per workflow step.

Each module listed in ``SUBCOMMANDS`` exposes ``add_parser(subparsers)`` that registers its
arguments and sets ``func``. Configs reach a subcommand as a JSON string (``--config-json``), which
Snakemake passes from ``params:`` so that changing one job's settings reruns only that job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = (
    "prepare",
    "model",
    "baseline",
    "select_windows",
    "tuned",
    "teacher",
    "latent",
    "pretrain",
    "hidden_cache",
    "table",
    "report",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentwire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"latentwire.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
