"""Report figures from results files (matplotlib, Agg backend; PNG and SVG by file suffix).

- :func:`plot_f1_vs_m`: F1 against M per (dataset, model): the token-budget curve over M, each latent
  at its M, text and closed book as horizontal lines with their CI bands; error bars are the
  bootstrap CIs of ``intervals.csv`` (so figures and tables show the same numbers).
- :func:`plot_latency`: median prefill and per-token decode latency per system (bars), whiskers to
  the p90 (over batches, as measured in ``metrics.json``).
- :func:`plot_payload`: bytes on the wire, log scale: each latent's fp32/fp16/int8 size against the
  mean UTF-8 bytes of the text content.
- :func:`plot_training`: per latent experiment, the training loss per receiver, first-token accuracy
  (train batches smoothed, validation points) and the validation unique-prediction share over steps.

Each function takes the output paths; an empty input gives a figure that says so, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from latentwire.analysis.results import ResultSet  # noqa: E402
from latentwire.io import atomic_path  # noqa: E402


def read_intervals(path: str | Path) -> pd.DataFrame:
    """The ``intervals.csv`` of ``latentwire stats`` (per-system rows are ``kind == "mean"``)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _save(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    """Each file atomically (a killed job leaves no half-written PNG that looks finished)."""
    try:
        for p in paths:
            fmt = Path(p).suffix.lstrip(".")  # the temporary name ends in .tmp: say the format
            # No timestamp in SVGs, so an unchanged figure is an unchanged file.
            meta = {"Date": None} if fmt == "svg" else {}
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight", metadata=meta)
    finally:
        plt.close(fig)


def _grid(n: int, ncols: int, w: float = 4.8, h: float = 3.4) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _empty(paths: Sequence[str | Path], message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    _save(fig, paths)


def _panels(rs: ResultSet) -> list[tuple[str, str]]:
    return sorted({(s.dataset, s.model) for s in rs.systems})


def plot_f1_vs_m(rs: ResultSet, intervals: pd.DataFrame, paths: Sequence[str | Path]) -> None:
    """F1 (%) against M per (dataset, model), with bootstrap-CI error bars and bands."""
    panels = _panels(rs)
    if not panels:
        return _empty(paths, "no results")
    f1 = intervals[(intervals["kind"] == "mean") & (intervals["metric"] == "f1")]
    fig, axes = _grid(len(panels), 3)
    for ax, (d, m) in zip(axes.flat, panels):
        rows = {r["system"]: r for _, r in f1[(f1["dataset"] == d) & (f1["model"] == m)].iterrows()}
        err = lambda r: [[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]]  # noqa: E731
        budgets = sorted((int(s.split("-", 1)[1]), r) for s, r in rows.items() if s.startswith("budget-"))
        if budgets:
            xs, rs_ = [b[0] for b in budgets], [b[1] for b in budgets]
            ax.errorbar(xs, [r["estimate"] for r in rs_], yerr=np.hstack([err(r) for r in rs_]),
                        marker="o", capsize=3, label="token budget")  # fmt: skip
        for s in rs.main_latents():
            if (s.dataset, s.model) == (d, m) and s.system in rows and s.content_positions:
                r = rows[s.system]
                ax.errorbar([s.content_positions], [r["estimate"]], yerr=err(r), marker="*", markersize=11,
                            capsize=3, linestyle="none", label=s.system)  # fmt: skip
        for name, color in (("text", "C2"), ("closed", "0.4")):
            if name in rows:
                r = rows[name]
                ax.axhline(r["estimate"], color=color, linestyle="--", label=name)
                ax.axhspan(r["ci_low"], r["ci_high"], color=color, alpha=0.12)
        ax.set(title=f"{d} / {m}", xlabel="M (content positions)", ylabel="F1 (%)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, paths)


def plot_latency(rs: ResultSet, paths: Sequence[str | Path]) -> None:
    """Median prefill and decode latency per system (bars) with whiskers up to the p90."""
    panels = _panels(rs)
    if not panels:
        return _empty(paths, "no results")
    systems = {p: [s for s in rs.systems if (s.dataset, s.model) == p] for p in panels}
    height = max(2.0, 0.28 * max(len(v) for v in systems.values()) + 1.0)
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, height * len(panels)), squeeze=False)
    for row, (d, m) in enumerate(panels):
        ss = systems[(d, m)]
        for col, (key, label) in enumerate((("prefill_ms", "prefill (ms per batch)"),
                                            ("decode_ms_per_token", "decode (ms per token)"))):  # fmt: skip
            ax = axes[row, col]
            med = np.array([(s.metrics.get(key) or {}).get("median", np.nan) for s in ss], dtype=float)
            p90 = np.array([(s.metrics.get(key) or {}).get("p90", np.nan) for s in ss], dtype=float)
            y = np.arange(len(ss))
            ax.barh(y, med, xerr=[np.zeros_like(med), np.clip(p90 - med, 0, None)], capsize=3,
                    color=["C3" if s.exp else "C0" for s in ss])  # fmt: skip
            ax.set_yticks(y, [s.system for s in ss], fontsize=7)
            ax.invert_yaxis()
            ax.set(title=f"{d} / {m}: {label}", xlabel="median, whisker to p90")
    fig.tight_layout()
    _save(fig, paths)


def plot_payload(rs: ResultSet, paths: Sequence[str | Path]) -> None:
    """Bytes on the wire per example (log scale): latent fp32/fp16/int8 vs UTF-8 text bytes."""
    datasets = sorted({s.dataset for s in rs.systems})
    if not datasets:
        return _empty(paths, "no results")
    fig, axes = _grid(len(datasets), 2, w=6.0, h=3.2)
    for ax, d in zip(axes.flat, datasets):
        bars: dict[str, float] = {}
        text = [s for s in rs.systems if s.dataset == d and "text_bytes" in s.metrics]
        if text:
            bars["text (UTF-8, mean)"] = float(text[0].metrics["text_bytes"])
        for s in rs.main_latents():
            if s.dataset != d or any(k.startswith(s.system + " ") for k in bars):
                continue  # the latent's size is the same for every receiver
            for fmt, b in (
                s.metrics.get("payload_bytes_by_format") or {"fp16": s.metrics["payload_bytes"]}
            ).items():
                bars[f"{s.system} {fmt}"] = float(b)
        y = np.arange(len(bars))
        ax.barh(y, list(bars.values()), color=["C2" if k.startswith("text") else "C3" for k in bars])
        for yi, v in zip(y, bars.values()):
            ax.text(v, yi, f" {v:,.0f} B", va="center", fontsize=7)
        ax.set_xscale("log")
        if bars:  # start a decade below the smallest bar so that every bar is visible
            ax.set_xlim(left=10 ** math.floor(math.log10(max(min(bars.values()), 1.0))))
        ax.set_yticks(y, list(bars), fontsize=7)
        ax.invert_yaxis()
        ax.set(title=f"{d}: payload bytes per example", xlabel="bytes (log scale)")
    fig.tight_layout()
    _save(fig, paths)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < window:
        return x
    return np.convolve(x, np.ones(window) / window, mode="valid")


def plot_training(logs: dict[str, list[dict]], paths: Sequence[str | Path]) -> None:
    """Per experiment: loss per receiver, first-token accuracy, unique-prediction share over steps."""
    logs = {k: v for k, v in logs.items() if v}
    if not logs:
        return _empty(paths, "no latent experiment: no training curves")
    fig, axes = plt.subplots(len(logs), 3, figsize=(14, 3.4 * len(logs)), squeeze=False)
    for row, (label, recs) in enumerate(logs.items()):
        # every receiver some step trained or validated (Stage A0 steps train none, a Stage B subset
        # some, train.sample_receiver one per step)
        val = [r for r in recs if "val" in r]
        trained = (k for r in recs for k, v in r.items() if isinstance(v, dict) and "loss" in v)
        receivers = list(
            dict.fromkeys([*trained, *(k for r in val for k, v in r["val"].items() if isinstance(v, dict))])
        )
        for i, name in enumerate(receivers):
            c = f"C{i}"
            own = [r for r in recs if isinstance(r.get(name), dict) and "loss" in r[name]]  # its steps
            steps = np.array([r["step"] for r in own])
            window = max(1, len(own) // 50)  # per-batch accuracy is noisy: moving average
            axes[row, 0].plot(steps, [r[name]["loss"] for r in own], color=c, lw=0.8, label=name)
            acc = _smooth(np.array([r[name]["first_acc"] for r in own], dtype=float), window)
            axes[row, 1].plot(steps[len(steps) - len(acc) :], acc, color=c, lw=0.8, label=f"{name} (train)")
            vs = [r["step"] for r in val if name in r["val"]]
            axes[row, 1].plot(vs, [r["val"][name]["first_token_top1"] for r in val if name in r["val"]],
                              "o--", color=c, ms=3, label=f"{name} (val)")  # fmt: skip
            axes[row, 2].plot(vs, [r["val"][name]["unique_prediction_ratio"] for r in val if name in r["val"]],
                              "o-", color=c, ms=3, label=name)  # fmt: skip
        titles = (
            "training loss",
            "first-token accuracy (train: moving mean)",
            "unique-prediction share (val)",
        )
        for ax, t in zip(axes[row], titles):
            ax.set_title(f"{label}: {t}", fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        axes[row, 1].set_ylim(0, 1)
        axes[row, 2].set_ylim(0, 1.05)
    fig.tight_layout()
    _save(fig, paths)
