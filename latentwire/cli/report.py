"""``latentwire stats`` and ``latentwire figures``: bootstrap intervals, hypotheses and figures.

Both read results files only: ``metrics.json`` (and the ``predictions.jsonl`` the same job wrote
beside it), ``joint.json`` and ``train_log.jsonl``; never checkpoints. Bootstrap settings arrive as
``--config-json`` (:class:`latentwire.analysis.stats.StatsArgs`) and are written into every output.
"""

from __future__ import annotations

import argparse
import json
import logging

from latentwire.analysis import hypotheses, intervals
from latentwire.analysis.results import ResultSet, read_train_log
from latentwire.analysis.stats import StatsArgs
from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.io import write_json, write_text
from latentwire.provenance import provenance

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="bootstrap intervals, paired deltas and the hypothesis table")
    _results_args(p)
    p.add_argument("--joint", nargs="*", default=[], help="joint.json of each latent experiment")
    p.add_argument("--joint-datasets", nargs="*", default=[], help="dataset name of each joint.json")
    p.add_argument("--config-json", default="{}", help="StatsArgs as JSON (n_resamples, seed, alpha)")
    for name in ("intervals-csv", "intervals-md", "hypotheses-csv", "hypotheses-md", "provenance"):
        p.add_argument(f"--{name}", required=True)
    p.set_defaults(func=run_stats)

    f = sub.add_parser("figures", help="F1 vs M, latency, payload bytes and training curves")
    _results_args(f)
    f.add_argument("--intervals", required=True, help="intervals.csv written by `latentwire stats`")
    f.add_argument("--train-logs", nargs="*", default=[])
    f.add_argument("--train-labels", nargs="*", default=[], help="label of each train log")
    for name in ("f1-vs-m", "latency", "payload", "training"):
        f.add_argument(f"--{name}", nargs="+", required=True, help="output files (.png/.svg)")
    f.add_argument("--provenance", required=True)
    f.set_defaults(func=run_figures)


def _results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files")
    p.add_argument("--datasets", nargs="*", default=[], help="dataset name of each metrics file")


def _check_pairs(a: list, b: list, what: str) -> None:
    if b and len(a) != len(b):
        raise ConfigError(f"{what}: {len(a)} files but {len(b)} names")


def run_stats(args: argparse.Namespace) -> int:
    _check_pairs(args.metrics, args.datasets, "--metrics/--datasets")
    _check_pairs(args.joint, args.joint_datasets, "--joint/--joint-datasets")
    st = from_dict(StatsArgs, json.loads(args.config_json), where="stats")
    rs = ResultSet.load(args.metrics, args.datasets, args.joint, args.joint_datasets)
    prov = provenance({"stats": to_dict(st), "metrics": args.metrics, "joint": args.joint})
    footer = f"_git {prov['git_revision']}, config {prov['config_hash']}, {prov['created']}_"
    iv = intervals.build_intervals(rs, st)
    hy = hypotheses.build_hypotheses(rs, st)
    write_text(args.intervals_csv, iv.to_csv(index=False))
    write_text(args.intervals_md, intervals.to_markdown(iv, st, footer))
    write_text(args.hypotheses_csv, hy.to_csv(index=False))
    hmd = hypotheses.to_markdown(hy, st, footer)
    write_text(args.hypotheses_md, hmd)
    counts = hy["status"].value_counts().to_dict()
    write_json(args.provenance, {"stats": to_dict(st), "hypotheses": counts, "provenance": prov})
    print(hmd)
    return 0


def run_figures(args: argparse.Namespace) -> int:
    from latentwire.analysis import figures  # matplotlib only where needed

    _check_pairs(args.metrics, args.datasets, "--metrics/--datasets")
    _check_pairs(args.train_logs, args.train_labels, "--train-logs/--train-labels")
    rs = ResultSet.load(args.metrics, args.datasets, predictions=False)
    ivs = figures.read_intervals(args.intervals)
    labels = args.train_labels or args.train_logs
    logs = {lab: read_train_log(p) for lab, p in zip(labels, args.train_logs)}
    figures.plot_f1_vs_m(rs, ivs, args.f1_vs_m)
    figures.plot_latency(rs, args.latency)
    figures.plot_payload(rs, args.payload)
    figures.plot_training(logs, args.training)
    prov = provenance({"metrics": args.metrics, "intervals": args.intervals, "train_logs": args.train_logs})
    outputs = args.f1_vs_m + args.latency + args.payload + args.training
    write_json(args.provenance, {"figures": outputs, "provenance": prov})
    log.info("wrote %d figure files", len(outputs))
    return 0
