"""``latentwire prepare``: read the configured QA sources and write one parquet per split.

Example::

    latentwire prepare --out-dir results/data/squad \\
      --config-json '{"name": "squad", "sources": [{"format": "squad",
                      "path": "resources/squad-dev-v1.1.json.gz"}]}'

Writes ``{out-dir}/{split}.parquet`` and ``{out-dir}/provenance.json``.
"""

from __future__ import annotations

import argparse
import json
import logging

from latentwire.config import ConfigError, from_dict, to_dict

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``prepare`` subcommand."""
    p = subparsers.add_parser("prepare", help="prepare QA data splits (parquet)", description=__doc__)
    p.add_argument("--config-json", required=True, help="DatasetArgs as a JSON string")
    p.add_argument("--out-dir", required=True, help="folder for {split}.parquet and provenance.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare, write and log the number of examples and articles per split."""
    # Imported here so that `latentwire --help` stays fast and independent of pandas/pyarrow.
    from latentwire.data.prepare import DatasetArgs, prepare_dataset, write_splits
    from latentwire.provenance import provenance

    try:
        raw = json.loads(args.config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json: not valid JSON ({e})") from e
    cfg = from_dict(DatasetArgs, raw, where="dataset")
    frames = prepare_dataset(cfg)
    paths = write_splits(frames, args.out_dir, provenance(to_dict(cfg)))
    for path, (split, frame) in zip(paths, frames.items()):
        log.info("%s: %d examples, %d articles -> %s", split, len(frame), frame["title"].nunique(), path)
    return 0
