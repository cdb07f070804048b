"""Answer metrics as pure functions over strings and lists (no torch, no I/O).

SQuAD-style normalisation lives in :func:`normalize_answer` only. EM and F1 take the maximum over
all gold answers, as the official SQuAD v1.1 evaluation script does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from latentwire.registry import Registry

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

#: Per-example answer metrics: f(prediction, golds) -> float.
ANSWER_METRICS: Registry[Callable[[str, Sequence[str]], float]] = Registry("answer metric")


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1_single(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)  # both empty → 1, one empty → 0
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


@ANSWER_METRICS.register("em")
def exact_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    if not golds:
        raise ValueError("exact_match needs at least one gold answer")
    return float(max(normalize_answer(pred) == normalize_answer(g) for g in golds))


@ANSWER_METRICS.register("f1")
def f1_score(pred: str, golds: Sequence[str]) -> float:
    """Token-overlap F1 after normalisation, maximised over gold answers."""
    if not golds:
        raise ValueError("f1_score needs at least one gold answer")
    return max(_f1_single(pred, g) for g in golds)


_LEADINS = re.compile(
    r"^(the\s+)?(correct\s+|final\s+|short\s+)?answer(\s+to\s+(this|your|the)\s+question)?"
    r"\s*(is\b\s*:?|:)\s*",
    re.IGNORECASE,
)


def postprocess_answer(text: str) -> str:
    """Turn a raw generation into an answer string.

    Rules (documented in README): keep the first non-empty line; drop one leading lead-in
    "Answer:" / "The answer is" (optionally "correct"/"final"/"short" answer, "... to this/your/the
    question", with or without a colon); strip surrounding quotes, whitespace and a final period.
    Nothing else: no span search against the context, which would mix retrieval into the metric.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    s = lines[0] if lines else ""
    s = _LEADINS.sub("", s).strip()
    s = s.strip("\"'`* ").rstrip(".").strip()
    return s


def percentile_summary(values: Sequence[float]) -> dict[str, float]:
    """Median and p90 (and mean) of a list of latencies or sizes."""
    if len(values) == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan")}
    arr = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "mean": float(arr.mean()),
    }


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty list (never silently 0)."""
    return float(np.mean(values)) if len(values) else float("nan")
