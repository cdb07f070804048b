"""Evaluation results as read back from disk, for the statistics, hypotheses and figures.

Reads only results files (never checkpoints): each ``metrics.json`` with the ``predictions.jsonl``
that the same job writes beside it, each latent experiment's ``joint.json``, and training logs
(``train_log.jsonl``). System names follow the evaluators: ``text``, ``closed``, ``budget-M``,
``latent:{exp}`` and its variants ``latent:{exp}:shuffled`` / ``:zero`` / ``:int8``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentwire.analysis.stats import values_by_id
from latentwire.io import read_json, read_jsonl
from latentwire.provenance import config_hash

# Per-example metrics with a CI: key -> (label, unit, row -> value). F1/EM/first@1 in % points.
METRICS: dict[str, tuple[str, str, Callable[[dict], float]]] = {
    "f1": ("F1", "%", lambda r: 100.0 * r["f1"]),
    "em": ("EM", "%", lambda r: 100.0 * r["em"]),
    "nll_per_token": ("NLL/tok", "nats", lambda r: r["nll_per_token"]),
    "first_token_top1": ("first@1", "%", lambda r: 100.0 * (r["first_token_rank"] < 1)),
}


def parse_system(system: str) -> tuple[str, str | None]:
    """``latent:{exp}[:variant]`` -> (exp, variant or None); other systems -> ("", None)."""
    parts = system.split(":")
    if parts[0] != "latent" or len(parts) < 2:
        return "", None
    return parts[1], parts[2] if len(parts) > 2 else None


_TUNED = re.compile(r"^(.+)-tuned-s(\d+)$")

#: table rank of each text-side kind: text, budgets, the discrete comparators, the oracle bound
_KIND_RANK = {"text": 0, "budget": 1, "tail": 2, "lexical": 3, "selfinfo": 4, "select-text": 5, "oracle": 6}


def tuned_base(system: str) -> tuple[str, int] | None:
    """``text-tuned-s1`` -> ("text", 1); ``select-text-48-tuned-s0`` -> ("select-text-48", 0); else None."""
    m = _TUNED.match(system)
    return (m.group(1), int(m.group(2))) if m else None


def text_side_kind(system: str) -> tuple[str, int | None] | None:
    """(kind, M) of a text-side system (baseline, comparator or tuned ceiling), None for latents."""
    from latentwire.evaluation.baselines import parse_baseline

    tuned = tuned_base(system)
    try:
        return parse_baseline(tuned[0] if tuned else system)
    except ValueError:
        return None


def system_order(system: str) -> tuple[int, float, str]:
    """Table order: text (and its tuned ceiling), token budgets and comparators by kind and M, the
    oracle bound, latents (variants after their system), closed book."""
    if system == "closed":
        return (9, 0, system)
    kind = text_side_kind(system)
    if kind is None:
        return (8, 0, system)
    name, M = kind
    return (_KIND_RANK.get(name, 7), float(M or 0), system)


@dataclass
class SystemResult:
    """One evaluated (dataset, model, system): its summary metrics and per-example rows."""

    dataset: str
    model: str
    system: str
    metrics: dict[str, Any]
    rows: list[dict] | None = None  # None when predictions were not loaded

    @property
    def exp(self) -> str:
        return parse_system(self.system)[0]

    @property
    def is_main_latent(self) -> bool:
        exp, variant = parse_system(self.system)
        return bool(exp) and variant is None

    @property
    def content_positions(self) -> float | None:
        return self.metrics.get("content_positions")

    def per_example(self, metric: str) -> dict[str, float]:
        """``{example id: value}`` of one metric of :data:`METRICS`."""
        if self.rows is None:
            raise ValueError(f"{self.system}: predictions were not loaded")
        return values_by_id([r["id"] for r in self.rows], [METRICS[metric][2](r) for r in self.rows])

    def clusters(self) -> dict[str, str] | None:
        """``{example id: article}`` when every prediction row names its article, else None."""
        if not self.rows or any(not r.get("title") for r in self.rows):
            return None
        return {r["id"]: r["title"] for r in self.rows}

    def batches(self) -> list[dict[str, Any]]:
        """The evaluation batches in order: ``{"ids", "prefill_s", "decode_s_per_token"}`` each.

        Rows are written batch after batch and carry their batch's size and timings.
        """
        out, i, rows = [], 0, self.rows or []
        while i < len(rows):
            b = rows[i : i + max(1, int(rows[i]["batch_size"]))]
            out.append(
                {
                    "ids": [r["id"] for r in b],
                    "prefill_s": b[0]["prefill_s"],
                    "decode_s_per_token": b[0]["decode_s_per_token"],
                }
            )
            i += len(b)
        return out

    def run_config_without_seed(self) -> str | None:
        """Hash of the latent run config with ``train.seed`` removed (from provenance), else None."""
        run = (self.metrics.get("provenance") or {}).get("config", {}).get("run")
        if not isinstance(run, dict):
            return None
        run = copy.deepcopy(run)
        run.get("train", {}).pop("seed", None)
        return config_hash(run)

    @property
    def train_seed(self) -> int | None:
        run = (self.metrics.get("provenance") or {}).get("config", {}).get("run") or {}
        return run.get("train", {}).get("seed")


def _weighted(parts: list[dict[str, Any]], n: list[float]) -> dict[str, Any]:
    """The first part's keys; every number the n-weighted mean of the parts' (n itself summed)."""
    out = dict(parts[0])
    total = sum(n)
    for k, v in parts[0].items():
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and all(isinstance(p.get(k), (int, float)) for p in parts)
        ):
            out[k] = sum(p[k] * w for p, w in zip(parts, n)) / total if total else v
    out["n"] = int(total)
    return out


def merge_folds(group: list[tuple[str, SystemResult]]) -> SystemResult:
    """One system's results from several metrics files under one dataset label (the folds of a
    k-fold dataset): rows concatenated, summary numbers the n-weighted means, ``folds`` the count.
    Refuses files that share a question: that is one result twice, not two folds."""
    first = group[0][1]
    seen: dict[str, str] = {}
    for path, r in group:
        for row in r.rows or []:
            if str(row["id"]) in seen:
                raise ValueError(
                    f"{path} and {seen[str(row['id'])]} both hold question {row['id']} of "
                    f"({first.dataset}, {first.model}, {first.system}): not disjoint folds"
                )
            seen[str(row["id"])] = path
    metrics = _weighted([r.metrics for _, r in group], [r.metrics.get("n", 0) for _, r in group])
    metrics["folds"] = len(group)
    rows = None if any(r.rows is None for _, r in group) else [row for _, r in group for row in r.rows]
    return SystemResult(first.dataset, first.model, first.system, metrics, rows)


def merge_joints(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Joint-rescoring summaries of the folds of one experiment: examples concatenated, rates the
    n-weighted means."""
    out = _weighted(group, [j.get("n", 0) for j in group])
    out["examples"] = [e for j in group for e in j.get("examples", [])]
    out["folds"] = len(group)
    return out


@dataclass
class ResultSet:
    """All systems of a run, and the joint-rescoring summaries of the latent experiments."""

    systems: list[SystemResult] = field(default_factory=list)
    joints: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (dataset, exp) ->

    @classmethod
    def load(
        cls,
        metric_files: Sequence[str | Path],
        datasets: Sequence[str] | None = None,
        joint_files: Sequence[str | Path] = (),
        joint_datasets: Sequence[str] | None = None,
        predictions: bool = True,
    ) -> ResultSet:
        """Read metrics files (and the ``predictions.jsonl`` beside each if ``predictions``).

        ``datasets[i]`` names the dataset of ``metric_files[i]`` (as for ``latentwire table``); the
        experiment of a ``joint.json`` comes from its provenance.
        """
        groups: dict[tuple[str, str, str], list[tuple[str, SystemResult]]] = {}
        for i, path in enumerate(metric_files):
            m = read_json(path)
            rows = read_jsonl(Path(path).with_name("predictions.jsonl")) if predictions else None
            ds = datasets[i] if datasets else m.get("dataset", "")
            r = SystemResult(ds, m.get("model", ""), m["system"], m, rows)
            groups.setdefault((r.dataset, r.model, r.system), []).append((str(path), r))
        systems = [g[0][1] if len(g) == 1 else merge_folds(g) for g in groups.values()]
        joint_groups: dict[tuple[str, str], list[dict]] = {}
        for i, path in enumerate(joint_files):
            j = read_json(path)
            exp = j.get("provenance", {}).get("config", {}).get("exp") or Path(path).parents[1].name
            joint_groups.setdefault((joint_datasets[i] if joint_datasets else "", exp), []).append(j)
        joints = {k: g[0] if len(g) == 1 else merge_joints(g) for k, g in joint_groups.items()}
        systems.sort(key=lambda s: (s.dataset, s.model, system_order(s.system)))
        return cls(systems, joints)

    def get(self, dataset: str, model: str, system: str) -> SystemResult | None:
        for s in self.systems:
            if (s.dataset, s.model, s.system) == (dataset, model, system):
                return s
        return None

    def main_latents(self) -> list[SystemResult]:
        """The ``latent:{exp}`` systems (no control or wire-format variant)."""
        return [s for s in self.systems if s.is_main_latent]

    def datasets(self) -> list[str]:
        return sorted({s.dataset for s in self.systems} | {d for d, _ in self.joints})

    def seed_groups(self) -> list[list[SystemResult]]:
        """Systems that differ only in their training seed (>= 2 seeds), grouped for seed averages,
        each group in seed order.

        Latents: grouped by dataset, model, variant and the run config without its seed (from
        provenance). Tuned text ceilings (``{base}-tuned-s{seed}``): by dataset, model and base.
        """
        groups: dict[tuple, list[SystemResult]] = {}
        for s in self.systems:
            key = s.run_config_without_seed()
            tuned = tuned_base(s.system)
            if s.exp and key is not None:
                groups.setdefault((s.dataset, s.model, parse_system(s.system)[1], key), []).append(s)
            elif tuned is not None:
                groups.setdefault((s.dataset, s.model, "tuned", tuned[0]), []).append(s)
        out = []
        for g in groups.values():
            seeds = [seed_of(s) for s in g]
            if len(set(seeds)) == len(g) >= 2:
                out.append([s for _, s in sorted(zip(seeds, g), key=lambda p: p[0])])
        return out


def seed_of(s: SystemResult) -> int | None:
    """A system's training seed: the latent run's ``train.seed``, or a tuned ceiling's ``-s{seed}``."""
    tuned = tuned_base(s.system)
    return tuned[1] if tuned else s.train_seed


def seed_group_name(group: Sequence[SystemResult]) -> str:
    """The name of a seed average: ``latent:a+a-s1+a-s2[:variant]`` or ``text-tuned-s0+s1+s2``."""
    first = group[0]
    tuned = tuned_base(first.system)
    if tuned is not None:
        return f"{tuned[0]}-tuned-" + "+".join(f"s{seed_of(s)}" for s in group)
    variant = parse_system(first.system)[1]
    return "latent:" + "+".join(s.exp for s in group) + (f":{variant}" if variant else "")


def read_train_log(path: str | Path) -> list[dict]:
    """The records of a ``train_log.jsonl`` (one per step; validation steps carry ``val``)."""
    return read_jsonl(path)


def cluster_map(cluster: str, *systems: SystemResult) -> dict[str, str] | None:
    """The example -> article map for a bootstrap over ``systems`` (``StatsArgs.cluster``): None when
    clustering is off or a system's predictions do not name their articles."""
    if cluster == "none":
        return None
    out: dict[str, str] = {}
    for s in systems:
        c = s.clusters()
        if c is None:
            return None
        out.update(c)
    return out
