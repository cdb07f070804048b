"""``latentwire table``: gather metrics files into a CSV + Markdown results table."""

from __future__ import annotations

import argparse
import logging

from latentwire.analysis.tables import gather, to_markdown
from latentwire.io import write_json, write_text
from latentwire.provenance import provenance

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="gather metrics.json files into one table")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--datasets", nargs="+", help="dataset name of each metrics file")
    p.add_argument("--csv", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--title", default="Results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    df = gather(args.metrics, args.datasets)
    prov = provenance({"metrics": args.metrics})
    md = to_markdown(df, args.title) + f"\n_git {prov['git_revision']}, {prov['created']}_\n"
    with_prov = df.to_csv(index=False)
    write_text(args.csv, with_prov)
    write_text(args.markdown, md)
    write_json(args.csv + ".provenance.json", prov)
    print(md)
    return 0
