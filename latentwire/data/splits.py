"""Deterministic article-level split assignment.

Examples are grouped by article (``title``) so that no article's passages appear in two splits:
otherwise a model could be tested on a paragraph whose neighbours it trained on. The sorted unique
titles are shuffled with ``random.Random(seed)`` and cut into contiguous blocks, one per split,
taken in sorted split-name order so that the result does not depend on the key order of the config
(the config hash is computed with sorted keys).

K-fold (:func:`assign_fold`): the same shuffled titles cut into k folds; fold ``i`` is the test
split and the other articles are split into train and validation by the fractions' ratio, so over
the k folds every article is tested exactly once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable


def check_fractions(fractions: dict[str, float]) -> None:
    """Raise ``ValueError`` unless fractions are non-negative, name real splits and sum to 1."""
    if not fractions:
        raise ValueError("split fractions are empty")
    for name, frac in fractions.items():
        if not name.strip():
            raise ValueError("split names must be non-empty")
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"fraction of split {name!r} must be in [0, 1], got {frac}")
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {total:g} ({fractions})")


def split_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Articles per split for ``n`` articles: largest-remainder rounding, then at least one article
    for every split with a positive fraction, taken from the largest split, while ``n`` allows."""
    check_fractions(fractions)
    names = sorted(fractions)
    exact = {s: fractions[s] * n for s in names}
    sizes = {s: math.floor(exact[s]) for s in names}
    # Hand the rounding leftovers to the largest remainders (ties: split name order).
    for s in sorted(names, key=lambda s: -(exact[s] - sizes[s]))[: n - sum(sizes.values())]:
        sizes[s] += 1
    for s in names:
        if fractions[s] > 0 and sizes[s] == 0:
            donor = max(names, key=lambda d: sizes[d])
            if sizes[donor] > 1:
                sizes[donor] -= 1
                sizes[s] = 1
    return sizes


def assign_splits(titles: Iterable[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Map every distinct title to a split name; the same inputs always give the same mapping."""
    unique = sorted(set(titles))
    random.Random(seed).shuffle(unique)
    out: dict[str, str] = {}
    start = 0
    for name, size in split_sizes(len(unique), fractions).items():
        for title in unique[start : start + size]:
            out[title] = name
        start += size
    return out


def fold_blocks(n: int, folds: int) -> list[range]:
    """Contiguous blocks of ``n`` shuffled articles, one per fold, sizes differing by at most one."""
    if folds < 2 or folds > n:
        raise ValueError(f"k-fold needs 2 <= folds <= articles ({n}), got folds = {folds}")
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    starts = [sum(sizes[:i]) for i in range(folds)]
    return [range(a, a + b) for a, b in zip(starts, sizes)]


def assign_fold(
    titles: Iterable[str], fractions: dict[str, float], seed: int, folds: int, fold: int
) -> dict[str, str]:
    """Map every distinct title to ``test`` (fold ``fold`` of ``folds``), else to ``train`` or
    ``validation`` in the ratio of ``fractions`` (the test fraction is ignored: the fold sets it)."""
    check_fractions(fractions)
    if set(fractions) - {"train", "validation", "test"}:
        raise ValueError(f"k-fold splits are train / validation / test, got {sorted(fractions)}")
    unique = sorted(set(titles))
    random.Random(seed).shuffle(unique)
    blocks = fold_blocks(len(unique), folds)
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    test = {unique[i] for i in blocks[fold]}
    rest = [t for t in unique if t not in test]  # shuffled order, as the folds themselves
    train, val = fractions.get("train", 0.0), fractions.get("validation", 0.0)
    share = (
        {"train": train / (train + val), "validation": val / (train + val)} if train + val else {"train": 1.0}
    )
    out = {t: "test" for t in test}
    start = 0
    for name, size in split_sizes(len(rest), share).items():
        for title in rest[start : start + size]:
            out[title] = name
        start += size
    return out
