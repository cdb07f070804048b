"""Results tables: gather ``metrics.json`` files into one CSV and one Markdown table.

Reads results files only (never checkpoints). One row per (dataset, model, system).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from latentwire.analysis.results import system_order
from latentwire.io import read_json

COLUMNS = [
    ("dataset", "dataset"),
    ("model", "model"),
    ("system", "system"),
    ("n", "n"),
    ("em", "EM"),
    ("f1", "F1"),
    ("nll_per_token", "NLL/tok"),
    ("first_token_top1", "first@1"),
    ("first_token_top5", "first@5"),
    ("prompt_tokens", "prompt tok"),
    ("content_positions", "content pos"),
    ("compression", "compression"),
    ("payload_bytes", "payload B"),
    ("batch_size", "batch"),  # the timings below are of one batch of this many rows (the last may be smaller)
    ("prefill_ms", "prefill ms/batch (median)"),
    ("decode_ms_per_token", "decode ms/tok/batch (median)"),
    ("unique_prediction_ratio", "unique pred"),
    ("share_tuned", "F1 / text-tuned"),
    ("share_text", "F1 / text"),
]


def gather(metric_files: Sequence[str | Path], datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per metrics file; ``datasets`` gives each file's dataset name (else "")."""
    rows = []
    for i, path in enumerate(metric_files):
        m = read_json(path)
        row = {}
        for key, _ in COLUMNS:
            v = m.get(key)
            row[key] = v["median"] if isinstance(v, dict) else v
        row["dataset"] = datasets[i] if datasets else m.get("dataset", "")
        rows.append(row)
    df = pd.DataFrame(rows, columns=[k for k, _ in COLUMNS])
    add_shares(df)
    df["_order"] = df["system"].map(system_order)
    return df.sort_values(["dataset", "model", "_order"]).drop(columns="_order").reset_index(drop=True)


def add_shares(df: pd.DataFrame) -> None:
    """F1 as a share of the trained text ceiling (``text-tuned-s*``, mean over seeds: the primary
    share) and of the zero-shot text prompt (secondary), per (dataset, model); NaN where absent."""
    df["share_tuned"] = float("nan")
    df["share_text"] = float("nan")
    for _, g in df.groupby(["dataset", "model"]):
        tuned = g.loc[g["system"].str.fullmatch(r"text-tuned-s\d+"), "f1"].mean()
        text = g.loc[g["system"] == "text", "f1"].mean()
        if pd.notna(tuned) and tuned > 0:
            df.loc[g.index, "share_tuned"] = g["f1"] / tuned
        if pd.notna(text) and text > 0:
            df.loc[g.index, "share_text"] = g["f1"] / text


def to_markdown(df: pd.DataFrame, title: str = "") -> str:
    """A GitHub-flavoured Markdown table (F1/EM as percentages, others rounded)."""
    headers = [h for _, h in COLUMNS]
    lines = [f"## {title}\n" if title else "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, r in df.iterrows():
        cells = []
        for key, _ in COLUMNS:
            v = r[key]
            if key in (
                "em", "f1", "first_token_top1", "first_token_top5", "unique_prediction_ratio", "share_tuned",
                "share_text",
            ):  # fmt: skip
                cells.append(f"{100 * v:.1f}" if pd.notna(v) else "")
            elif key == "batch_size":  # a count (float once a file lacks it)
                cells.append(str(int(v)) if v is not None and pd.notna(v) else "")
            elif isinstance(v, float):
                cells.append(f"{v:.2f}" if pd.notna(v) else "")
            elif v is None:  # a column no file has stays None (object dtype), not NaN
                cells.append("")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(line for line in lines if line is not None) + "\n"
