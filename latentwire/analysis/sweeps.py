"""Encoder sweeps: F1 against pooling factor, against pretraining, and against the wire's bits.

Issue #14's three tables, from results files only: each latent ``metrics.json`` (its provenance holds
the resolved run config, so the pooling factor, slot cap, trunk depth, pretraining and QA steps are read,
not guessed from names), ``intervals.csv`` of the same run (the clustered CIs, and the paired
latent − budget-M differences), and the pretraining summaries (steps, the kept step, held-out loss
before / after).

- :func:`pf_table`: one row per (dataset, model, experiment) at full precision: encoder settings (the
  cap M and the mean slots each message sends, fewer with ``latent.trim_pad``), F1
  [CI], the shuffled / zero controls, budget-M at the same positions and the paired difference.
- :func:`pretraining_table`: each experiment whose encoder starts from a pretraining, beside the
  experiment with the same settings that does not (matched on the whole run config but
  ``encoder.pretrained``); the pretraining's steps and held-out losses.
- :func:`bits_table`: every wire variant of every experiment (full precision first): bits per value,
  payload bytes, the UTF-8 bytes of the content it replaces, F1 [CI].
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from latentwire.encoders import ENCODERS
from latentwire.io import read_json

#: bits per transmitted value of each wire format (pq: its codes, reported as bytes per slot instead)
FORMAT_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}


def latent_rows(metric_files: Sequence[str | Path], datasets: Sequence[str]) -> pd.DataFrame:
    """One row per latent metrics file (baselines are skipped): its system, control, wire and settings."""
    rows = []
    for path, dataset in zip(metric_files, datasets):
        m = read_json(path)
        if m.get("kind") != "latent":
            continue
        cfg = m["provenance"]["config"]
        run = cfg["run"]
        enc = run["latent"]["encoder"]
        M = run["latent"]["n_shared"] + run["latent"]["n_private"]
        rows.append(
            {
                "dataset": dataset,
                "model": m["model"],
                "experiment": cfg["exp"],
                "system": m["system"],
                "control": m.get("control", "none"),
                "wire": m.get("wire_format", "fp16"),
                "encoder": enc["name"],
                "pool_factor": enc.get("pool_factor") if _pools(enc["name"]) else None,
                "M": M,
                "slots_sent": m.get("wire_slots", M),  # mean per message: < M with latent.trim_pad
                "drop_last": enc.get("drop_last"),
                "pretrained": enc.get("pretrained") or "",
                "qa_steps": run["train"]["steps"],
                "seed": run["train"]["seed"],
                "payload_bytes": m["payload_bytes"],
                "text_bytes": m.get("text_bytes"),
                "f1": 100 * m["f1"],
                "_run": _without_pretraining(run),
            }
        )
    return pd.DataFrame(rows)


def _pools(encoder: str) -> bool:
    """Whether the encoder's ``pool_factor`` is used (elsewhere it is an unused default, reported empty);
    an encoder no longer registered reports none."""
    return encoder in ENCODERS and ENCODERS.get(encoder).pools


def _without_pretraining(run: dict) -> str:
    """The run config with ``encoder.pretrained`` removed, as a key (what a matched pair shares)."""
    run = copy.deepcopy(run)
    run["latent"]["encoder"].pop("pretrained", None)
    return json.dumps(run, sort_keys=True)


def _ci(intervals: pd.DataFrame, dataset: str, model: str, system: str, reference: str = "") -> tuple:
    """(estimate, low, high) of F1 for ``system`` (or its paired difference to ``reference``)."""
    ref = intervals["reference"].fillna("")
    hit = intervals[
        (intervals["dataset"] == dataset)
        & (intervals["model"] == model)
        & (intervals["system"] == system)
        & (ref == reference)
        & (intervals["metric"] == "f1")
    ]
    if hit.empty:
        return (float("nan"),) * 3
    r = hit.iloc[0]
    return float(r["estimate"]), float(r["ci_low"]), float(r["ci_high"])


def pf_table(rows: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """Full-precision latents by pooling factor, beside their controls and budget-M (see module doc)."""
    out = []
    main = rows[(rows["control"] == "none") & (rows["wire"] == "fp16")]
    for r in main.itertuples():
        f1, lo, hi = _ci(intervals, r.dataset, r.model, r.system)
        budget = f"budget-{r.M}"
        b, _, _ = _ci(intervals, r.dataset, r.model, budget)
        d, dlo, dhi = _ci(intervals, r.dataset, r.model, r.system, budget)
        ctl = {
            c: rows[
                (rows["experiment"] == r.experiment) & (rows["model"] == r.model) & (rows["control"] == c)
            ]
            for c in ("shuffled", "zero")
        }
        out.append(
            {
                "dataset": r.dataset,
                "model": r.model,
                "experiment": r.experiment,
                "encoder": r.encoder,
                "pool_factor": r.pool_factor,
                "M": r.M,
                "slots_sent": r.slots_sent,
                "drop_last": r.drop_last,
                "pretrained": r.pretrained,
                "qa_steps": r.qa_steps,
                "seed": r.seed,
                "f1": f1,
                "ci_low": lo,
                "ci_high": hi,
                "shuffled_f1": ctl["shuffled"]["f1"].mean(),
                "zero_f1": ctl["zero"]["f1"].mean(),
                "budget": budget,
                "budget_f1": b,
                "minus_budget": d,
                "minus_budget_low": dlo,
                "minus_budget_high": dhi,
            }
        )
    return (
        pd.DataFrame(out)
        .sort_values(["dataset", "model", "pool_factor", "experiment"])
        .reset_index(drop=True)
    )


def pretraining_table(
    pf: pd.DataFrame, rows: pd.DataFrame, summaries: dict[tuple[str, int], dict]
) -> pd.DataFrame:
    """Matched pairs with / without pretraining (see module doc); ``summaries``: (pretrain name, seed)
    → its ``pretrain_summary.json`` (a fine-tuning run starts from the pretraining at its own seed)."""
    key = rows.drop_duplicates(["experiment"]).set_index("experiment")["_run"]
    out = []
    for r in pf[pf["pretrained"] != ""].itertuples():
        mates = [e for e, k in key.items() if k == key[r.experiment] and e != r.experiment]
        same = (pf["model"] == r.model) & (pf["dataset"] == r.dataset) & (pf["seed"] == r.seed)
        base = pf[same & pf["experiment"].isin(mates)]
        s = summaries.get((r.pretrained, int(r.seed)), {})
        before = s.get("heldout_before", {}).get(r.model, {}).get("loss")
        after = s.get("heldout_after", {}).get(r.model, {}).get("loss")
        for b in base.itertuples() if len(base) else [None]:
            out.append(
                {
                    "dataset": r.dataset,
                    "model": r.model,
                    "experiment": r.experiment,
                    "pretrained": r.pretrained,
                    "pretrain_steps": s.get("steps"),
                    "checkpoint_step": s.get("checkpoint_step", s.get("steps")),  # keep: best
                    "heldout_loss_before": before,
                    "heldout_loss_after": after,
                    "qa_steps": r.qa_steps,
                    "f1": r.f1,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "without": b.experiment if b else "",
                    "without_f1": b.f1 if b else float("nan"),
                    "without_ci_low": b.ci_low if b else float("nan"),
                    "without_ci_high": b.ci_high if b else float("nan"),
                }
            )
    return pd.DataFrame(out)


def bits_table(rows: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """Every wire variant of every experiment, full precision first (see module doc)."""
    order = {"fp16": 0, "int8": 1, "int4": 2}
    out = []
    for r in rows[rows["control"] == "none"].itertuples():
        f1, lo, hi = _ci(intervals, r.dataset, r.model, r.system)
        out.append(
            {
                "dataset": r.dataset,
                "model": r.model,
                "experiment": r.experiment,
                "pool_factor": r.pool_factor,
                "M": r.M,
                "slots_sent": r.slots_sent,
                "wire": r.wire,
                "bits_per_value": FORMAT_BITS.get(r.wire, float("nan")),
                "payload_bytes": r.payload_bytes,
                "text_bytes": r.text_bytes,
                "payload_over_text": r.payload_bytes / r.text_bytes if r.text_bytes else float("nan"),
                "f1": f1,
                "ci_low": lo,
                "ci_high": hi,
                "_o": order.get(r.wire, 3),
            }
        )
    df = pd.DataFrame(out).sort_values(["dataset", "model", "experiment", "_o"])
    df["payload_bytes"] = df["payload_bytes"].round().astype("int64")  # a mean over messages if trimmed
    return df.drop(columns="_o").reset_index(drop=True)


def summary_key(path: str | Path) -> tuple[str, int]:
    """(pretrain name, seed) of ``results/pretrain/{dataset}/{name}/s{seed}/pretrain_summary.json``."""
    folder = Path(path).parent
    if not folder.name.startswith("s") or not folder.name[1:].isdigit():
        raise ValueError(f"{path}: expected .../{{name}}/s{{seed}}/pretrain_summary.json")
    return folder.parent.name, int(folder.name[1:])
