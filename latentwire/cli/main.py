"""The ``latentwire`` console command: one subcommand per workflow step.

Each module listed in ``SUBCOMMANDS`` exposes ``add_parser(subparsers)`` that registers its
arguments and sets ``func``. Configs reach a subcommand as a JSON string (``--config-json``), which
Snakemake passes from ``params:`` so that changing one job's settings reruns only that job.

A failure prints ONE line, ``latentwire <command>: error: <message>``, and exits 2 (a bad config,
model or input: the message names the key, file or entry) or 1 (anything else). ``--debug`` or
``LATENTWIRE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from latentwire.provenance import require_supported_versions

SUBCOMMANDS = (
    "prepare",
    "model",
    "baseline",
    "select_windows",
    "tuned",
    "teacher",
    "latent",
    "add_receiver",
    "pretrain",
    "table",
    "sweeps",
    "report",
    "bench",
    "nll_check",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    from latentwire.config import ConfigError
    from latentwire.data import DataError
    from latentwire.models.loading import ModelError

    return (ConfigError, DataError, ModelError, FileNotFoundError)


USER_ERRORS = _user_errors()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentwire", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (also: LATENTWIRE_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"latentwire.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    if args.debug or os.environ.get("LATENTWIRE_DEBUG", "") not in ("", "0"):
        require_supported_versions()
        return int(args.func(args) or 0)
    try:
        require_supported_versions()
        return int(args.func(args) or 0)
    except USER_ERRORS as e:  # the message names the key, file or registry entry
        print(f"latentwire {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        print(
            f"latentwire {args.command}: error: {type(e).__name__}: {_one_line(e)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
