"""Bootstrap confidence intervals for evaluation metrics (pure numpy: no I/O, no pandas, no torch).

Every interval is a *percentile* bootstrap: draw ``n_resamples`` resamples of the examples with
replacement (one ``(R, n)`` index matrix from ``numpy.random.default_rng(seed)``), compute the statistic
on each, and take the ``alpha/2`` and ``1 - alpha/2`` quantiles. The point estimate is the statistic on
the original sample. Settings travel with every result (:class:`Interval`), so a table states how its
intervals were made.

Comparisons of two systems on the *same* examples are *paired*: both systems are resampled with the
same indices, so the example-to-example variation they share cancels (a known shift gives a narrow
interval). Examples are matched by id; different id sets are an error, never silently intersected.

Questions of one article are correlated, so with ``cluster: article`` (the default) and article labels
for the examples, every resample is *two-stage* (a cluster bootstrap): draw the articles with
replacement, then the questions within each drawn article with replacement. Such a resample has a
random size, so it is held as an ``(R, n)`` matrix of counts W and a mean is ``W @ x / W.sum(1)``;
one W per (labels, R, seed) is drawn once and shared by every system, so paired comparisons stay
paired. Without labels (results files older than the article field) the method says so.

Notation: R = n_resamples, n = number of examples, S = number of training seeds, K = articles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Index matrices are built in row chunks of at most this many entries (R * n), to bound memory.
_CHUNK_ENTRIES = 4_000_000

Statistic = Callable[..., np.ndarray]  # f(values (R, n), axis=1) -> (R,), e.g. np.mean, np.median


@dataclass
class StatsArgs:
    """Bootstrap settings (the workflow config's ``stats:`` section)."""

    n_resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05  # two-sided: a (1 - alpha) interval
    cluster: str = "article"  # article: resample articles, then questions within them; none: questions

    def validate(self) -> None:
        if self.n_resamples < 1:
            raise ValueError("n_resamples must be >= 1")
        if self.cluster not in ("article", "none"):
            raise ValueError(f"cluster: {self.cluster!r} is not article or none")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval and the settings that produced it."""

    estimate: float
    low: float
    high: float
    n: int  # examples (or batches, or seeds x examples) the statistic was computed from
    n_resamples: int
    seed: int
    alpha: float
    method: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """The ``(R, n)`` int matrix of bootstrap indices for ``n`` examples (same seed, same matrix)."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)


@functools.lru_cache(maxsize=32)
def cluster_weights(labels: tuple[str, ...], n_resamples: int, seed: int) -> np.ndarray:
    """``(R, n)`` counts of a two-stage bootstrap: per resample, K articles drawn with replacement
    from the K distinct ``labels``, then within each drawn article as many questions as it has, drawn
    with replacement. Row r, column i: how often example i is in resample r."""
    if not labels:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    members = [np.flatnonzero(np.asarray(labels, dtype=object) == a) for a in names]
    W = np.zeros((n_resamples, len(labels)), dtype=np.float64)
    for r in range(n_resamples):
        for a in rng.integers(0, len(names), size=len(names)):
            m = members[a]
            np.add.at(W[r], m[rng.integers(0, len(m), size=len(m))], 1.0)
    W.setflags(write=False)
    return W


def _method(base: str, clusters: Sequence[str] | None) -> str:
    if clusters is None:
        return base
    k = len(set(clusters))
    return f"{base}, clustered by article ({k} articles resampled, then questions within them)"


def _resampled(
    columns: Sequence[np.ndarray], args: StatsArgs, stat: Statistic, clusters: Sequence[str] | None = None
) -> np.ndarray:
    """``stat`` of every column over the same resamples: returns ``(R, k)`` for k columns of length n.

    The resamples are drawn once (so columns are paired): an index matrix applied in row chunks, or,
    with ``clusters`` (one article label per example), the two-stage count matrix of
    :func:`cluster_weights` (means only).
    """
    n = len(columns[0])
    if clusters is not None:
        if stat is not np.mean:
            raise ValueError("a clustered bootstrap supports the mean only")
        if len(clusters) != n:
            raise ValueError(f"{len(clusters)} cluster labels for {n} examples")
        W = cluster_weights(tuple(clusters), args.n_resamples, args.seed)  # (R, n)
        return np.stack([W @ col for col in columns], axis=1) / W.sum(1, keepdims=True)
    idx = resample_indices(n, args.n_resamples, args.seed)  # (R, n)
    rows = max(1, _CHUNK_ENTRIES // n)
    out = np.empty((args.n_resamples, len(columns)))
    for start in range(0, args.n_resamples, rows):
        chunk = idx[start : start + rows]  # (r, n)
        for j, col in enumerate(columns):
            out[start : start + rows, j] = stat(col[chunk], axis=1)
    return out


def _interval(point: float, boot: np.ndarray, n: int, args: StatsArgs, method: str, **detail) -> Interval:
    low, high = np.quantile(boot, [args.alpha / 2, 1 - args.alpha / 2])
    return Interval(
        float(point), float(low), float(high), n, args.n_resamples, args.seed, args.alpha, method, detail
    )


def _array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"expected a non-empty 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    args: StatsArgs,
    stat: Statistic = np.mean,
    clusters: Sequence[str] | None = None,
) -> Interval:
    """Percentile bootstrap interval of ``stat`` (default: the mean) over per-example ``values`` (n,);
    ``clusters``: the article of each example (a two-stage bootstrap, see the module docstring)."""
    x = _array(values)
    boot = _resampled([x], args, stat, clusters)[:, 0]  # (R,)
    method = _method(f"percentile bootstrap of the {stat.__name__}", clusters)
    return _interval(stat(x[None], axis=1)[0], boot, len(x), args, method)


def values_by_id(ids: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """``{id: value}``; a repeated id is an error (pairing by id would be ambiguous)."""
    out: dict[str, float] = {}
    for i, v in zip(ids, values, strict=True):
        if i in out:
            raise ValueError(f"example id {i!r} occurs more than once")
        out[i] = float(v)
    return out


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Match two ``{id: value}`` maps example by example: ``(ids, x (n,), y (n,))`` in sorted id order.

    Raises ``ValueError`` if the id sets differ: a paired comparison needs the same examples.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(
            f"paired comparison needs the same example ids: {len(only_a)} only in the first "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]})"
        )
    ids = sorted(a)
    return ids, _array([a[i] for i in ids]), _array([b[i] for i in ids])


def _labels(ids: Sequence[str], clusters: Mapping[str, str] | None) -> list[str] | None:
    """The article of each id (in ``ids`` order), or None without a cluster map."""
    if clusters is None:
        return None
    missing = [i for i in ids if i not in clusters]
    if missing:
        raise ValueError(f"no article label for {len(missing)} examples (e.g. {missing[:3]})")
    return [clusters[i] for i in ids]


def paired_diff_ci(
    a: Mapping[str, float], b: Mapping[str, float], args: StatsArgs, clusters: Mapping[str, str] | None = None
) -> Interval:
    """Paired bootstrap interval of ``mean(a) - mean(b)`` over the same examples (matched by id);
    ``clusters``: example id -> article, for the two-stage bootstrap."""
    ids, x, y = align(a, b)
    labels = _labels(ids, clusters)
    d = x - y  # (n,) per-example differences: resampling them resamples both systems together
    boot = _resampled([d], args, np.mean, labels)[:, 0]
    method = _method("paired percentile bootstrap of the difference of means", labels)
    return _interval(d.mean(), boot, len(d), args, method)


def paired_ratio_ci(
    a: Mapping[str, float],
    b: Mapping[str, float],
    args: StatsArgs,
    stat: Statistic = np.mean,
    clusters: Mapping[str, str] | None = None,
) -> Interval:
    """Paired bootstrap interval of ``stat(a) / stat(b)`` over the same examples (matched by id)."""
    ids, x, y = align(a, b)
    labels = _labels(ids, clusters)
    boot = _resampled([x, y], args, stat, labels)  # (R, 2), same resamples for both columns
    point = stat(x[None], axis=1)[0] / stat(y[None], axis=1)[0]
    method = _method(f"paired percentile bootstrap of the ratio of {stat.__name__}s", labels)
    return _interval(point, boot[:, 0] / boot[:, 1], len(x), args, method)


def two_sample_ratio_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    args: StatsArgs,
    stat: Statistic = np.mean,
) -> Interval:
    """Unpaired bootstrap interval of ``stat(x) / stat(y)``: each sample resampled on its own.

    For quantities that cannot be matched example by example (e.g. per-batch latencies of two runs
    whose batches differ). ``y`` uses ``seed + 1`` so the two index matrices are independent.
    """
    x, y = _array(x), _array(y)
    bx = _resampled([x], args, stat)[:, 0]
    by = _resampled([y], StatsArgs(args.n_resamples, args.seed + 1, args.alpha), stat)[:, 0]
    point = stat(x[None], axis=1)[0] / stat(y[None], axis=1)[0]
    return _interval(
        point,
        bx / by,
        len(x) + len(y),
        args,
        f"two-sample percentile bootstrap of the ratio of {stat.__name__}s",
    )


def seed_mean_ci(
    per_seed: Sequence[Sequence[float] | np.ndarray],
    args: StatsArgs,
    shared_examples: bool = True,
    clusters: Sequence[str] | None = None,
) -> Interval:
    """Mean over training seeds of each seed's per-example mean, with a bootstrap interval.

    Method: the estimate is ``mean_s mean_i x[s, i]`` (each seed weighs the same). Each resample draws
    examples with replacement *within* every seed, takes each seed's mean and averages over seeds. With
    ``shared_examples`` (every seed was evaluated on the same examples, in the same order) one index
    draw is used for all seeds, because the test set is one sample shared by the seeds; otherwise each
    seed gets its own draw; ``clusters`` (the article of each shared example) makes that one draw
    two-stage. The seeds themselves are *not* resampled: with a handful of seeds a
    bootstrap over seeds is unreliable, so the interval covers example sampling of the seed-average,
    and the spread between seeds is reported separately (``detail['seed_sd']``, ``detail['seed_means']``).
    """
    arrays = [_array(s) for s in per_seed]
    if not arrays:
        raise ValueError("seed_mean_ci needs at least one seed")
    seed_means = np.array([a.mean() for a in arrays])  # (S,)
    if shared_examples:
        if len({len(a) for a in arrays}) != 1:
            raise ValueError("shared_examples needs the same number of examples for every seed")
        boot = _resampled(arrays, args, np.mean, clusters).mean(axis=1)  # (R, S) -> (R,)
    else:
        boot = np.mean(
            [
                _resampled([a], StatsArgs(args.n_resamples, args.seed + s, args.alpha), np.mean)[:, 0]
                for s, a in enumerate(arrays)
            ],
            axis=0,
        )
    return _interval(
        seed_means.mean(),
        boot,
        sum(len(a) for a in arrays),
        args,
        _method(
            "mean over seeds; percentile bootstrap of examples within each seed"
            + (" (same draw for all seeds)" if shared_examples else " (independent draws)"),
            clusters if shared_examples else None,
        ),
        n_seeds=len(arrays),
        seed_means=seed_means.tolist(),
        seed_sd=float(seed_means.std(ddof=1)) if len(arrays) > 1 else 0.0,
    )
