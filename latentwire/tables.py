"""Results tables: gather ``metrics.json`` files into one CSV and one Markdown table.

Reads results files only (never checkpoints). One row per (dataset, model, system).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from latentwire.io import read_json
from latentwire.results import system_order

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
    ("prefill_ms", "prefill ms (median)"),
    ("decode_ms_per_token", "decode ms/tok (median)"),
    ("unique_prediction_ratio", "unique pred"),
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
    df["_order"] = df["system"].map(system_order)
    return df.sort_values(["dataset", "model", "_order"]).drop(columns="_order").reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str = "") -> str:
    """A GitHub-flavoured Markdown table (F1/EM as percentages, others rounded)."""
    headers = [h for _, h in COLUMNS]
    lines = [f"## {title}\n" if title else "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, r in df.iterrows():
        cells = []
        for key, _ in COLUMNS:
            v = r[key]
            if key in ("em", "f1", "first_token_top1", "first_token_top5", "unique_prediction_ratio"):
                cells.append(f"{100 * v:.1f}" if pd.notna(v) else "")
            elif isinstance(v, float):
                cells.append(f"{v:.2f}" if pd.notna(v) else "")
            elif v is None:  # a column no file has stays None (object dtype), not NaN
                cells.append("")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(line for line in lines if line is not None) + "\n"
