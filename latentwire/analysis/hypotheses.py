"""The hypothesis table: each research hypothesis judged on the results, with its interval.

One row per hypothesis and latent system (dataset x model x experiment; H4 per experiment). Status:

- ``met``: the *whole* paired bootstrap interval clears the threshold (and any fixed condition,
  such as the compression of H1, holds);
- ``not met``: it does not (a point estimate that already misses the threshold is ``not met`` too);
- ``not evaluable``: an input is missing (no latent experiment, no budget at the latent's M, no
  per-example joint picks while the point estimate would clear the threshold, different examples).

Hypotheses (F1 in points, 0-100):

- H1  latent F1 >= text F1 - 2, at >= 4x compression (text content tokens / latent positions);
- H2  latent F1 > budget-M F1 + 3, budget-M with M = the latent's content positions;
- H3  latent NLL/token <= 1.05 x text NLL/token (paired CI of the ratio of means);
- H4  joint rescoring F1 >= best single receiver F1 + 1.5 (from ``joint.json``; see
  :func:`latentwire.analysis.intervals.joint_delta` for when a CI exists);
- H5a prefill reduced: >= 4x fewer content positions, and the median per-batch prefill time of text
  over latent (speed-up) has its CI above 1 (paired by batch when both runs batched the same ids);
- H5b payload reduced: the latent's bytes on the wire (smallest *evaluated* wire format: int8 if the
  ``:int8`` system exists, else fp16) below the UTF-8 bytes of the text content (CI of the mean of
  per-example text bytes; the latent's size is fixed). Both numbers are reported.
- H6  latent F1 > the best discrete comparator's F1 at no more positions and no more bytes: among the
  evaluated text-side rivals of the same receiver (budget-M, tail-M, lexical-M, selfinfo-M,
  select-text-M and their tuned ceilings; never the oracle bound, never the full text) with content
  positions ≤ the latent's and wire bytes (min of UTF-8 and packed ids) ≤ the latent's smallest
  evaluated wire format, the one with the highest mean F1; paired CI of the difference above 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from latentwire.analysis.intervals import budget_at, fmt_ci, joint_delta, paired_delta
from latentwire.analysis.results import ResultSet, SystemResult, cluster_map, text_side_kind
from latentwire.analysis.stats import Interval, StatsArgs, bootstrap_ci, paired_ratio_ci, two_sample_ratio_ci

MET, NOT_MET, NOT_EVALUABLE = "met", "not met", "not evaluable"
H1_MAX_DROP, MIN_COMPRESSION, H2_MARGIN, H3_MAX_RATIO, H4_MARGIN = 2.0, 4.0, 3.0, 1.05, 1.5

STATEMENTS = {
    "H1": f"latent F1 ≥ text F1 − {H1_MAX_DROP:g} at ≥ {MIN_COMPRESSION:g}× compression",
    "H2": f"latent F1 > token-budget F1 + {H2_MARGIN:g} at the same M",
    "H3": f"latent NLL/token ≤ {H3_MAX_RATIO:g} × text NLL/token",
    "H4": f"joint rescoring F1 ≥ best single receiver F1 + {H4_MARGIN:g}",
    "H5a": f"prefill reduced: ≥ {MIN_COMPRESSION:g}× fewer content positions and lower prefill time than text",
    "H5b": "payload reduced: latent bytes on the wire < UTF-8 bytes of the text content",
    "H6": "latent F1 > best discrete comparator F1 at ≤ the latent's positions and ≤ its bytes",
}
#: text-side kinds that are discrete rivals of a latent (H6): no full text, closed book or oracle
DISCRETE_KINDS = frozenset({"budget", "tail", "lexical", "selfinfo", "select-text"})
COLUMNS = [
    "hypothesis", "dataset", "model", "system", "reference", "statement", "status", "estimate", "ci_low",
    "ci_high", "threshold", "unit", "note", "n", "method", "n_resamples", "seed", "alpha",
]  # fmt: skip


def _row(h: str, s: SystemResult | None, reference: str, status: str, note: str, args: StatsArgs,
         iv: Interval | None = None, threshold: str = "", unit: str = "", **over: Any) -> dict:  # fmt: skip
    row = {
        "hypothesis": h, "dataset": s.dataset if s else "", "model": s.model if s else "",
        "system": s.system if s else "", "reference": reference, "statement": STATEMENTS[h],
        "status": status, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "threshold": threshold, "unit": unit, "note": note, "n": 0, "method": "",
        "n_resamples": args.n_resamples, "seed": args.seed, "alpha": args.alpha,
    }  # fmt: skip
    if iv is not None:
        row.update(estimate=iv.estimate, ci_low=iv.low, ci_high=iv.high, n=iv.n, method=iv.method)
    return {**row, **over}


def _compression(lat: SystemResult) -> float:
    c = lat.metrics.get("compression")
    return float(c) if c is not None else math.nan


def h1(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    text = rs.get(lat.dataset, lat.model, "text")
    if text is None:
        return _row("H1", lat, "text", NOT_EVALUABLE, "no text baseline", args)
    iv, why = paired_delta(lat, text, "f1", args)
    if iv is None:
        return _row("H1", lat, "text", NOT_EVALUABLE, why, args)
    comp = _compression(lat)
    ok_f1, ok_comp = iv.low >= -H1_MAX_DROP, comp >= MIN_COMPRESSION
    note = f"ΔF1 CI low {iv.low:.1f} {'≥' if ok_f1 else '<'} −{H1_MAX_DROP:g}; compression {comp:.2f}×"
    note += "" if ok_comp else f" (< {MIN_COMPRESSION:g}×)"
    status = MET if ok_f1 and ok_comp else NOT_MET
    return _row("H1", lat, "text", status, note, args, iv, f"≥ −{H1_MAX_DROP:g}", "F1 points")


def h2(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    budget = budget_at(rs, lat)
    M = lat.content_positions
    if budget is None:
        have = sorted(s.system for s in rs.systems if s.system.startswith("budget-") and s.model == lat.model)
        note = f"no token budget at M = {M:g} (evaluated: {', '.join(have) or 'none'})"
        return _row("H2", lat, f"budget-{M:g}", NOT_EVALUABLE, note, args)
    iv, why = paired_delta(lat, budget, "f1", args)
    if iv is None:
        return _row("H2", lat, budget.system, NOT_EVALUABLE, why, args)
    status = MET if iv.low > H2_MARGIN else NOT_MET
    note = f"ΔF1 CI low {iv.low:.1f} {'>' if status == MET else '≤'} {H2_MARGIN:g}"
    return _row("H2", lat, budget.system, status, note, args, iv, f"> {H2_MARGIN:g}", "F1 points")


def h3(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    text = rs.get(lat.dataset, lat.model, "text")
    if text is None:
        return _row("H3", lat, "text", NOT_EVALUABLE, "no text baseline", args)
    try:
        iv = paired_ratio_ci(
            lat.per_example("nll_per_token"),
            text.per_example("nll_per_token"),
            args,
            clusters=cluster_map(args.cluster, lat, text),
        )
    except ValueError as e:
        return _row("H3", lat, "text", NOT_EVALUABLE, f"not computed: {e}", args)
    status = MET if iv.high <= H3_MAX_RATIO else NOT_MET
    note = f"NLL ratio CI high {iv.high:.3f} {'≤' if status == MET else '>'} {H3_MAX_RATIO:g}"
    return _row("H3", lat, "text", status, note, args, iv, f"≤ {H3_MAX_RATIO:g}", "ratio")


def h4(rs: ResultSet, dataset: str, exp: str, args: StatsArgs) -> dict:
    pseudo = SystemResult(dataset, "joint", f"joint:{exp}", {})
    if (dataset, exp) not in rs.joints:
        return _row("H4", pseudo, "best single", NOT_EVALUABLE, "no joint.json (needs ≥ 2 receivers)", args)
    jd = joint_delta(rs, dataset, exp, args)
    ref, thr, iv = f"best single ({jd['best_model']})", f"≥ {H4_MARGIN:g}", jd["interval"]
    if iv is not None:
        status = MET if iv.low >= H4_MARGIN else NOT_MET
        note = f"ΔF1 CI low {iv.low:.1f} {'≥' if status == MET else '<'} {H4_MARGIN:g}"
        return _row("H4", pseudo, ref, status, note, args, iv, thr, "F1 points")
    est = jd["estimate"]
    status = NOT_MET if est < H4_MARGIN else NOT_EVALUABLE
    note = f"point estimate {est:.1f}" + (
        f" < {H4_MARGIN:g} (a CI cannot clear it)" if status == NOT_MET else "; no paired CI possible"
    )
    n = rs.joints[(dataset, exp)].get("n", 0)
    return _row(
        "H4", pseudo, ref, status, note, args, None, thr, "F1 points", estimate=est, n=n, method=jd["method"]
    )


def _batch_prefill(s: SystemResult) -> dict[str, float]:
    return {"|".join(b["ids"]): b["prefill_s"] for b in s.batches()}


def h5a(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    text = rs.get(lat.dataset, lat.model, "text")
    if text is None or not lat.rows or not text.rows:
        return _row("H5a", lat, "text", NOT_EVALUABLE, "no text baseline with predictions", args)
    t, x = _batch_prefill(text), _batch_prefill(lat)
    if set(t) == set(x):  # same batches of the same examples: pair them
        iv = paired_ratio_ci(t, x, args, np.median)
    else:
        iv = two_sample_ratio_ci(list(t.values()), list(x.values()), args, np.median)
    comp = _compression(lat)
    ok_t, ok_c = iv.low > 1.0, comp >= MIN_COMPRESSION
    note = (
        f"median prefill text {1e3 * np.median(list(t.values())):.1f} ms vs latent "
        f"{1e3 * np.median(list(x.values())):.1f} ms per batch (speed-up CI low {iv.low:.2f} "
        f"{'>' if ok_t else '≤'} 1); content positions {comp:.2f}× fewer"
        + ("" if ok_c else f" (< {MIN_COMPRESSION:g}×)")
    )
    status = MET if ok_t and ok_c else NOT_MET
    return _row("H5a", lat, "text", status, note, args, iv, "> 1 and ≥ 4× positions", "speed-up ×")


def h5b(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    if not lat.rows or "text_bytes" not in lat.rows[0]:
        return _row("H5b", lat, "text", NOT_EVALUABLE, "no per-example text bytes", args)
    fmts = lat.metrics.get("payload_bytes_by_format") or {}
    fmt, size = latent_wire_bytes(rs, lat)
    clusters = cluster_map(args.cluster, lat)
    labels = [clusters[r["id"]] for r in lat.rows] if clusters else None
    tb = bootstrap_ci([r["text_bytes"] for r in lat.rows], args, clusters=labels)  # mean UTF-8 bytes
    iv = Interval(tb.estimate / size, tb.low / size, tb.high / size, tb.n, args.n_resamples, args.seed,
                  args.alpha, "percentile bootstrap of mean text bytes / fixed latent bytes")  # fmt: skip
    status = MET if iv.low > 1.0 else NOT_MET
    sizes = (
        ", ".join(f"{k} {v:g} B" for k, v in sorted(fmts.items(), key=lambda kv: kv[1]))
        or f"{fmt} {size:g} B"
    )
    note = (
        f"latent {fmt} {size:g} B (formats: {sizes}) vs UTF-8 text {tb.estimate:.0f} B "
        f"[{tb.low:.0f}, {tb.high:.0f}] per example; latent < text: {'yes' if status == MET else 'no'}"
    )
    return _row("H5b", lat, "text (UTF-8)", status, note, args, iv, "> 1", "text/latent bytes ×")


def latent_wire_bytes(rs: ResultSet, lat: SystemResult) -> tuple[str, float]:
    """(format, bytes) of the latent's smallest evaluated wire format (int8 if evaluated, else fp16)."""
    evaluated = {"fp16": float(lat.metrics["payload_bytes"])}
    int8 = rs.get(lat.dataset, lat.model, f"{lat.system}:int8")
    if int8 is not None:
        evaluated["int8"] = float(int8.metrics["payload_bytes"])
    fmt = min(evaluated, key=evaluated.get)
    return fmt, evaluated[fmt]


def discrete_rivals(rs: ResultSet, lat: SystemResult) -> list[SystemResult]:
    """Discrete comparators of ``lat``'s receiver at ≤ its content positions and ≤ its wire bytes."""
    M, (_, size) = lat.content_positions or 0, latent_wire_bytes(rs, lat)
    out = []
    for s in rs.systems:
        kind = text_side_kind(s.system)
        if s.dataset != lat.dataset or s.model != lat.model or kind is None or kind[0] not in DISCRETE_KINDS:
            continue
        m = s.metrics
        wire = min(m.get("payload_bytes", math.inf), m.get("payload_id_bytes", math.inf))
        if m.get("content_positions", math.inf) <= M + 1e-9 and wire <= size:
            out.append(s)
    return out


def h6(rs: ResultSet, lat: SystemResult, args: StatsArgs) -> dict:
    rivals = discrete_rivals(rs, lat)
    if not rivals:
        note = f"no discrete comparator evaluated at ≤ {lat.content_positions or 0:g} positions"
        return _row("H6", lat, "best discrete", NOT_EVALUABLE, note, args)
    best = max(rivals, key=lambda s: s.metrics["f1"])
    iv, why = paired_delta(lat, best, "f1", args)
    if iv is None:
        return _row("H6", lat, best.system, NOT_EVALUABLE, why, args)
    status = MET if iv.low > 0 else NOT_MET
    others = ", ".join(f"{s.system} {100 * s.metrics['f1']:.1f}" for s in rivals if s is not best)
    note = (
        f"best of {len(rivals)}: {best.system} F1 {100 * best.metrics['f1']:.1f} at "
        f"{best.metrics.get('content_positions', 0):.0f} positions; ΔF1 CI low {iv.low:.1f} "
        f"{'>' if status == MET else '≤'} 0" + (f" (others: {others})" if others else "")
    )
    return _row("H6", lat, best.system, status, note, args, iv, "> 0", "F1 points")


def build_hypotheses(rs: ResultSet, args: StatsArgs) -> pd.DataFrame:
    """The hypothesis table (columns :data:`COLUMNS`); without latents, one not-evaluable row each."""
    lats = rs.main_latents()
    if not lats and not rs.joints:
        rows = [
            _row(h, SystemResult(d, "", "", {}), "", NOT_EVALUABLE, "no latent experiment", args)
            for d in rs.datasets() or [""]
            for h in STATEMENTS
        ]
        return pd.DataFrame(rows, columns=COLUMNS)
    rows = []
    for lat in lats:
        rows += [f(rs, lat, args) for f in (h1, h2, h3, h5a, h5b, h6)]
    for dataset, exp in sorted({(s.dataset, s.exp) for s in lats} | set(rs.joints)):
        rows.append(h4(rs, dataset, exp, args))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["_h"] = df["hypothesis"].map({h: i for i, h in enumerate(STATEMENTS)})
    df = df.sort_values(["_h", "dataset"], kind="stable")  # keeps results-table order within
    return df.drop(columns="_h").reset_index(drop=True)


def to_markdown(df: pd.DataFrame, args: StatsArgs, footer: str = "") -> str:
    """The hypothesis table as Markdown, statements listed once above it."""
    level = f"{100 * (1 - args.alpha):g}%"
    lines = [
        f"## Hypotheses ({level} paired percentile bootstrap, {args.n_resamples} resamples, seed {args.seed})\n"
    ]
    lines += [f"- **{h}**: {s}" for h, s in STATEMENTS.items()]
    lines += ["", "A hypothesis is *met* only if its whole interval clears the threshold.", ""]
    lines += [
        "| H | dataset | model | system | vs | status | estimate [CI] | threshold | note |",
        "|" + "---|" * 9,
    ]
    for _, r in df.iterrows():
        est = (
            fmt_ci(r["estimate"], r["ci_low"], r["ci_high"], "%" if r["unit"] == "F1 points" else "")
            if np.isfinite(r["estimate"])
            else ""
        )
        cells = [
            r["hypothesis"],
            r["dataset"],
            r["model"],
            r["system"],
            r["reference"],
            f"**{r['status']}**",
            est,
            r["threshold"],
            r["note"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n" + (f"\n{footer}\n" if footer else "")
