"""``latentwire sweeps``: F1 vs pooling factor, vs pretraining, vs wire bits (latentwire.analysis.sweeps)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from latentwire.analysis.sweeps import bits_table, latent_rows, pf_table, pretraining_table, summary_key
from latentwire.config import ConfigError
from latentwire.io import read_json, write_json, write_text
from latentwire.provenance import provenance

log = logging.getLogger(__name__)
TABLES = ("pf", "pretraining", "bits")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweeps", help="F1 vs pooling factor, pretraining and wire bits, as CSVs")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files (baselines are skipped)")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset name of each metrics file")
    p.add_argument("--intervals", required=True, help="intervals.csv of the same run (latentwire stats)")
    p.add_argument("--pretrain-summaries", nargs="*", default=[], help="pretrain_summary.json files")
    p.add_argument("--out-dir", required=True, help="writes pf.csv, pretraining.csv, bits.csv")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if len(args.datasets) != len(args.metrics):
        raise ConfigError(f"--datasets: {len(args.datasets)} name(s) for {len(args.metrics)} metrics files")
    rows = latent_rows(args.metrics, args.datasets)
    out = Path(args.out_dir)
    if rows.empty:
        log.warning("no latent metrics among %d files: empty tables", len(args.metrics))
        tables = {name: pd.DataFrame() for name in TABLES}
    else:
        intervals = pd.read_csv(args.intervals)
        summaries = {summary_key(p): read_json(p) for p in args.pretrain_summaries}
        pf = pf_table(rows, intervals)
        tables = {"pf": pf, "pretraining": pretraining_table(pf, rows, summaries)}
        tables["bits"] = bits_table(rows, intervals)
    for name, df in tables.items():
        write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.4g"))
        log.info("%s.csv: %d rows", name, len(df))
    write_json(out / "sweeps.json", provenance({"metrics": args.metrics, "intervals": args.intervals}))
    return 0
