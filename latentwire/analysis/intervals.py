"""The intervals table: a bootstrap CI for every metric of every system, and the paired deltas.

Rows (one per system or comparison, and metric of :data:`latentwire.analysis.results.METRICS`):

- ``mean``: the metric of one system with its percentile-bootstrap CI over examples;
- ``difference``: ``system − reference`` on the same examples (paired bootstrap), for each latent
  system against ``text``, against ``budget-M`` and ``select-text-M`` at its own M (M = its content
  positions), against its ``:shuffled`` control and against the tuned text ceiling ``text-tuned-s0``;
  and joint rescoring against the best single receiver (for a wire extended to a new receiver, an
  old receiver's single is the source experiment's latent, whose predictions the extension
  reproduces exactly);
- ``seed mean``: latent experiments that differ only in ``train.seed``, averaged over seeds
  (:func:`latentwire.analysis.stats.seed_mean_ci`).

Joint rescoring: ``joint.json`` holds aggregates only, so ``joint − best single`` is a point
estimate without CI, unless the file carries per-example picks as ``examples: [{"id", "f1_joint"}]``
(F1 in [0, 1]); then it is paired against the best receiver's latent predictions by id.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from latentwire.analysis.results import (
    METRICS,
    ResultSet,
    SystemResult,
    cluster_map,
    seed_group_name,
)
from latentwire.analysis.stats import (
    Interval,
    StatsArgs,
    bootstrap_ci,
    paired_diff_ci,
    seed_mean_ci,
    values_by_id,
)

log = logging.getLogger(__name__)

COLUMNS = [
    "dataset", "model", "system", "reference", "kind", "metric", "unit", "estimate", "ci_low", "ci_high",
    "n", "method", "n_resamples", "seed", "alpha",
]  # fmt: skip


def _row(dataset, model, system, reference, kind, metric, iv: Interval | None, args, **point) -> dict:
    base = {
        "dataset": dataset, "model": model, "system": system, "reference": reference, "kind": kind,
        "metric": metric, "unit": METRICS[metric][1] if metric in METRICS else "",
        "n_resamples": args.n_resamples, "seed": args.seed, "alpha": args.alpha,
    }  # fmt: skip
    if iv is None:  # a point estimate, or a comparison that could not be made
        return {**base, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, **point}
    return {
        **base,
        "estimate": iv.estimate,
        "ci_low": iv.low,
        "ci_high": iv.high,
        "n": iv.n,
        "method": iv.method,
    }


def budget_at(rs: ResultSet, latent: SystemResult) -> SystemResult | None:
    """The token-budget baseline with M = the latent's content positions, if it was evaluated."""
    m = latent.content_positions
    if m is None or m != round(m):
        return None
    return rs.get(latent.dataset, latent.model, f"budget-{int(m)}")


def comparisons(rs: ResultSet) -> list[tuple[SystemResult, SystemResult, str]]:
    """(system, reference, label) of every paired latent comparison the tables state."""
    out = []
    for lat in rs.main_latents():
        refs = [
            (rs.get(lat.dataset, lat.model, "text"), "latent − text"),
            (budget_at(rs, lat), f"latent − budget-{lat.content_positions:g}"),
            (rs.get(lat.dataset, lat.model, f"{lat.system}:shuffled"), "latent − shuffled"),
            (
                rs.get(lat.dataset, lat.model, f"select-text-{lat.content_positions:g}"),
                "latent − select-text",
            ),
            (rs.get(lat.dataset, lat.model, "text-tuned-s0"), "latent − text-tuned"),
        ]
        out += [(lat, ref, label) for ref, label in refs if ref is not None]
    return out


def paired_delta(
    a: SystemResult, b: SystemResult, metric: str, args: StatsArgs
) -> tuple[Interval | None, str]:
    """Paired CI of ``a − b``; (None, reason) if the two were not run on the same examples."""
    try:
        clusters = cluster_map(args.cluster, a, b)
        return paired_diff_ci(a.per_example(metric), b.per_example(metric), args, clusters), ""
    except ValueError as e:
        log.warning("%s vs %s (%s): %s", a.system, b.system, metric, e)
        return None, f"not computed: {e}"


def joint_delta(rs: ResultSet, dataset: str, exp: str, args: StatsArgs) -> dict[str, Any]:
    """``f1_joint − f1_best_single`` in F1 points for one latent experiment.

    Returns ``{"estimate", "interval" (Interval | None), "best_model", "method"}``.
    """
    j = rs.joints[(dataset, exp)]
    models = sorted(
        k[3:] for k in j if k.startswith("f1_") and k not in ("f1_joint", "f1_oracle", "f1_best_single")
    )
    best = max(models, key=lambda m: j[f"f1_{m}"]) if models else ""
    point = 100.0 * (j["f1_joint"] - j["f1_best_single"])
    single = rs.get(dataset, best, f"latent:{exp}")
    source = j.get("provenance", {}).get("config", {}).get("source_exp")
    if single is None and source:  # an extended wire: its old receivers' rows are the experiment's
        single = rs.get(dataset, best, f"latent:{source}")  # (identical, checked by wire_check.json)
    if j.get("examples") and single is not None and single.rows is not None:
        joint = values_by_id([e["id"] for e in j["examples"]], [100.0 * e["f1_joint"] for e in j["examples"]])
        try:
            iv = paired_diff_ci(joint, single.per_example("f1"), args, cluster_map(args.cluster, single))
            return {"estimate": iv.estimate, "interval": iv, "best_model": best, "method": iv.method}
        except ValueError as e:
            return {
                "estimate": point,
                "interval": None,
                "best_model": best,
                "method": f"point estimate ({e})",
            }
    method = "point estimate (joint.json has aggregates only, no per-example picks)"
    return {"estimate": point, "interval": None, "best_model": best, "method": method}


def build_intervals(rs: ResultSet, args: StatsArgs) -> pd.DataFrame:
    """The intervals table (columns :data:`COLUMNS`), systems in results-table order."""
    rows = []
    for s in rs.systems:
        clusters = cluster_map(args.cluster, s)
        for metric in METRICS:
            v = s.per_example(metric)
            labels = [clusters[i] for i in v] if clusters else None
            iv = bootstrap_ci(list(v.values()), args, clusters=labels)
            rows.append(_row(s.dataset, s.model, s.system, "", "mean", metric, iv, args))
    for a, b, _ in comparisons(rs):
        for metric in METRICS:
            iv, why = paired_delta(a, b, metric, args)
            rows.append(
                _row(a.dataset, a.model, a.system, b.system, "difference", metric, iv, args, method=why)
            )
    for (dataset, exp), _ in sorted(rs.joints.items()):
        jd = joint_delta(rs, dataset, exp, args)
        ref = f"best single ({jd['best_model']})"
        if jd["interval"] is not None:
            rows.append(_row(dataset, "joint", f"joint:{exp}", ref, "difference", "f1", jd["interval"], args))
        else:
            rows.append(
                _row(
                    dataset,
                    "joint",
                    f"joint:{exp}",
                    ref,
                    "difference",
                    "f1",
                    None,
                    args,
                    estimate=jd["estimate"],
                    method=jd["method"],
                    n=rs.joints[(dataset, exp)].get("n", 0),
                )
            )
    for group in rs.seed_groups():
        first, name = group[0], seed_group_name(group)
        for metric in METRICS:
            per_seed, ids = [], None
            for s in group:
                v = s.per_example(metric)
                ids = ids or sorted(v)
                per_seed.append(np.array([v[i] for i in sorted(v)]))
            shared = all(sorted(s.per_example(metric)) == ids for s in group)
            clusters = cluster_map(args.cluster, *group)
            labels = [clusters[i] for i in ids] if clusters and shared else None
            iv = seed_mean_ci(per_seed, args, shared_examples=shared, clusters=labels)
            rows.append(_row(first.dataset, first.model, name, "", "seed mean", metric, iv, args))
    return pd.DataFrame(rows, columns=COLUMNS)


def fmt_ci(estimate: float, low: float, high: float, unit: str) -> str:
    """``"13.5 [9.1, 18.2]"`` (1 decimal for %, 2 otherwise); a point estimate without brackets."""
    d = 1 if unit == "%" else 2
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{d}f} (point)"
    return f"{estimate:.{d}f} [{low:.{d}f}, {high:.{d}f}]"


def to_markdown(df: pd.DataFrame, args: StatsArgs, footer: str = "") -> str:
    """Two wide tables: per-system intervals and paired differences (one column per metric)."""
    level = f"{100 * (1 - args.alpha):g}%"
    heads = [METRICS[m][0] for m in METRICS]
    parts = [f"## Intervals ({level} percentile bootstrap, {args.n_resamples} resamples, seed {args.seed})\n"]
    for kind, title, key_cols in (
        ("mean", "Per system", ["dataset", "model", "system", "n"]),
        ("seed mean", "Averaged over training seeds", ["dataset", "model", "system", "n"]),
        (
            "difference",
            "Paired differences (system − reference)",
            ["dataset", "model", "system", "reference", "n"],
        ),
    ):
        sub = df[df["kind"] == kind]
        if sub.empty:
            continue
        parts += [
            f"### {title}\n",
            "| " + " | ".join(key_cols + heads) + " |",
            "|" + "---|" * (len(key_cols) + len(heads)),
        ]
        for _, g in sub.groupby(["dataset", "model", "system", "reference"], sort=False):
            by_metric = {r["metric"]: r for _, r in g.iterrows()}
            first = g.iloc[0]
            cells = [str(first[c]) for c in key_cols if c != "n"] + [str(int(g["n"].max()))]
            for m in METRICS:
                r = by_metric.get(m)
                cells.append(
                    fmt_ci(r["estimate"], r["ci_low"], r["ci_high"], r["unit"]) if r is not None else ""
                )
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    notes = sorted({m for m in df["method"].dropna() if m.startswith(("point", "not computed"))})
    parts += [f"_{n}_" for n in notes]
    return "\n".join(parts) + ("\n" + footer if footer else "") + "\n"
