"""F1 of several systems on the same questions, grouped by where the gold answer sits in the context.

A head-truncation rival (``budget-M``) can only answer from the first M content tokens, while a latent
reads the whole context through its slots. This splits the test questions by whether the earliest
verbatim gold answer *ends* inside the first M tokens of the context (the receiver's tokenizer), and
reports each system's mean F1 per group. This is a diagnostic, not a hypothesis test: the groups come
from gold spans.

    python scripts/f1_by_answer_position.py --data results/data/squad/test.parquet \\
        --tokenizer resources/models/qwen2.5-coder-0.5b/hf --window 64 \\
        --system latent=path/latent/predictions.jsonl --system budget-64=path/budget-64/predictions.jsonl \\
        [--out f1_by_position.csv]
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from latentwire.io import read_jsonl


def answer_end_token(tok, context: str, answers: list[str]) -> int | None:
    """Token count of the context up to the end of its earliest verbatim gold answer (None: not found)."""
    hits = [(context.find(a), a) for a in answers if a and context.find(a) >= 0]
    if not hits:
        return None
    pos, ans = min(hits)
    return len(tok(context[: pos + len(ans)], add_special_tokens=False)["input_ids"])


def group_of(end: int | None, window: int) -> str:
    if end is None:
        return "answer not verbatim"
    return f"ends in first {window} tokens" if end <= window else f"ends after token {window}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the split's parquet (id, context, answers)")
    ap.add_argument("--tokenizer", required=True, help="the receiver's tokenizer folder")
    ap.add_argument("--window", type=int, default=64, help="M of the budget-M rival")
    ap.add_argument("--system", action="append", required=True, help="NAME=predictions.jsonl (repeat)")
    ap.add_argument("--out", help="CSV to write (group, n, one column per system)")
    a = ap.parse_args()
    data = pd.read_parquet(a.data).set_index("id")
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    systems = {}
    for spec in a.system:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--system {spec!r}: expected NAME=predictions.jsonl")
        systems[name] = {r["id"]: float(r["f1"]) for r in read_jsonl(path)}
    ids = sorted(set.intersection(*(set(s) for s in systems.values())))
    missing = [i for i in ids if i not in data.index]
    if missing:
        raise SystemExit(
            f"{a.data}: {len(missing)} question ids of the predictions are missing, e.g. {missing[0]}"
        )
    groups: dict[str, list[str]] = {}
    for i in ids:
        end = answer_end_token(tok, data.loc[i, "context"], list(data.loc[i, "answers"]))
        groups.setdefault(group_of(end, a.window), []).append(i)
    header = ["group", "n", *systems]
    table = [
        [g, len(v), *(round(100 * float(np.mean([s[i] for i in v])), 1) for s in systems.values())]
        for g, v in sorted(groups.items())
    ]
    table.append(
        ["all", len(ids), *(round(100 * float(np.mean([s[i] for i in ids])), 1) for s in systems.values())]
    )
    print(" | ".join(header))
    for row in table:
        print(" | ".join(map(str, row)))
    if a.out:
        with open(a.out, "w", newline="") as f:
            csv.writer(f).writerows([header, *table])


if __name__ == "__main__":
    main()
