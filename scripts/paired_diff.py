"""Paired F1 difference between prediction files of two runs on the same questions.

The pipeline's own tables pair systems inside one run; this pairs across runs (e.g. a receiver added
to a wire by ``add_receiver`` vs the same receiver trained jointly in another run), with the same
two-stage bootstrap over articles (``StatsArgs`` defaults). A and B may each be several files: their
per-question mean (e.g. the seeds of one configuration) is the system / the reference.

    python scripts/paired_diff.py --a A1.jsonl [A2.jsonl ...] --b B1.jsonl [B2.jsonl ...] [--name A_NAME] [--label B_NAME] [--out out.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from latentwire.analysis.stats import StatsArgs, paired_diff_ci


def read_rows(path: str) -> list[dict]:
    """The rows of one ``predictions.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def mean_by_id(paths: list[str], metric: str) -> dict[str, float]:
    """{question id: mean of ``metric`` over the files}; every file must hold the same questions."""
    per_file = [{r["id"]: float(r[metric]) for r in read_rows(p)} for p in paths]
    for p, f in zip(paths[1:], per_file[1:]):
        if set(f) != set(per_file[0]):
            raise SystemExit(f"{p}: other questions than {paths[0]}")
    return {i: float(np.mean([f[i] for f in per_file])) for i in per_file[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, nargs="+", help="predictions.jsonl of the system (mean over files)")
    ap.add_argument(
        "--b", required=True, nargs="+", help="predictions.jsonl of the reference (mean over files)"
    )
    ap.add_argument("--name", default="", help="name of the system in the output")
    ap.add_argument("--label", default="", help="name of the reference in the output")
    ap.add_argument("--metric", default="f1")
    ap.add_argument("--out", default="", help="append a CSV row here")
    args = ap.parse_args()
    a, b = mean_by_id(args.a, args.metric), mean_by_id(args.b, args.metric)
    clusters = {r["id"]: r["title"] for r in read_rows(args.a[0])}
    iv = paired_diff_ci(a, b, StatsArgs(), clusters)
    label, name = args.label or " + ".join(args.b), args.name or " + ".join(args.a)
    print(
        f"{args.metric} {name} - {label}: {100 * iv.estimate:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}] "
        f"(n {iv.n}; {iv.method})"
    )
    if args.out:
        new = not Path(args.out).exists()
        with open(args.out, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["system", "reference", f"delta_{args.metric}", "low", "high", "n", "method"])
            w.writerow(
                [
                    name,
                    label,
                    f"{100 * iv.estimate:.2f}",
                    f"{100 * iv.low:.2f}",
                    f"{100 * iv.high:.2f}",
                    iv.n,
                    iv.method,
                ]
            )


if __name__ == "__main__":
    main()
