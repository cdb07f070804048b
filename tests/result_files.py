"""Hand-made results files (metrics.json + predictions.jsonl, joint.json, train_log.jsonl) in the
layout the evaluators write, for the statistics, hypotheses and figures tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _values(v: float | Sequence[float], n: int) -> list[float]:
    return [float(x) for x in (np.full(n, v) if np.isscalar(v) else v)]


def write_system(
    root: Path,
    model: str,
    system: str,
    f1: float | Sequence[float],
    *,
    dataset: str = "squad",
    n: int = 40,
    ids: Sequence[str] | None = None,
    nll: float | Sequence[float] = 2.0,
    prefill_s: float = 0.1,
    content_positions: float = 120.0,
    text_tokens: float = 120.0,
    payload_bytes: float = 600.0,
    text_bytes: float | Sequence[float] = 600.0,
    batch_size: int = 8,
    train_seed: int | None = None,
    titles: Sequence[str] | None = None,
    payload_id_bytes: float | None = None,
) -> Path:
    """Write one system's predictions and metrics; returns the metrics.json path."""
    ids = list(ids) if ids is not None else [f"q{i:03d}" for i in range(n)]
    n = len(ids)
    f1s, nlls, tbs = _values(f1, n), _values(nll, n), _values(text_bytes, n)
    rows = []
    for i, qid in enumerate(ids):
        b = i // batch_size
        rows.append({
            "id": qid, "prediction": "x", "answers": ["x"], "f1": f1s[i], "em": float(f1s[i] == 1.0),
            "nll_per_token": nlls[i], "first_token_rank": 0 if f1s[i] > 0 else 5,
            "batch_size": min(batch_size, n - b * batch_size),
            "prefill_s": prefill_s * (1 + 0.05 * b), "decode_s_per_token": 0.01 * (1 + 0.05 * b),
            "content_positions": content_positions, "text_content_tokens": text_tokens,
            "payload_bytes": payload_bytes, "text_bytes": tbs[i],
        })  # fmt: skip
        if titles is not None:
            rows[-1]["title"] = titles[i]
    latent = system.startswith("latent:")
    if latent:
        exp, *variant = system.split(":")[1:]
        folder = root / "latent" / dataset / exp / "eval" / model / (variant[0] if variant else "latent")
    else:
        folder = root / "baselines" / dataset / model / system
    metrics = {
        "n": n, "f1": float(np.mean(f1s)), "em": float(np.mean([r["em"] for r in rows])),
        "nll_per_token": float(np.mean(nlls)), "first_token_top1": float(np.mean([r["first_token_rank"] < 1 for r in rows])),
        "content_positions": content_positions, "text_content_tokens": text_tokens,
        "compression": text_tokens / content_positions, "payload_bytes": payload_bytes,
        "text_bytes": float(np.mean(tbs)),
        "prefill_ms": {"median": 1e3 * prefill_s, "p90": 1.3e3 * prefill_s, "mean": 1.1e3 * prefill_s},
        "decode_ms_per_token": {"median": 10.0, "p90": 12.0, "mean": 10.5},
        "model": model, "system": system, "kind": "latent" if latent else "baseline",
    }  # fmt: skip
    if payload_id_bytes is not None:
        metrics["payload_id_bytes"] = payload_id_bytes
    if latent:
        metrics["payload_bytes_by_format"] = {
            "fp32": 2 * payload_bytes,
            "fp16": payload_bytes,
            "int8": payload_bytes / 2,
        }
        run = {"latent": {"n_shared": 4}, "train": {"steps": 4, "seed": train_seed or 0}}
        metrics["provenance"] = {"config": {"run": run, "exp": system.split(":")[1]}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def write_joint(
    root: Path, exp: str, f1_by_model: dict[str, float], f1_joint: float, *, dataset: str = "squad",
    examples: list[dict] | None = None, n: int = 40,
) -> Path:  # fmt: skip
    """A joint.json (aggregates, optionally per-example picks); returns its path."""
    j = {f"f1_{m}": v for m, v in f1_by_model.items()}
    j.update({"f1_joint": f1_joint, "f1_oracle": max(f1_by_model.values()), "agreement": 0.5, "n": n})
    j["f1_best_single"] = max(f1_by_model.values())
    j["provenance"] = {"config": {"exp": exp}}
    if examples is not None:
        j["examples"] = examples
    path = root / "latent" / dataset / exp / "eval" / "joint.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(j))
    return path


def write_train_log(path: Path, models: Sequence[str], steps: int = 20, eval_every: int = 5) -> Path:
    """A train_log.jsonl: per-receiver loss/first_acc each step, validation every ``eval_every``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        rec: dict = {"step": step, "lr": 1e-3, "grad_norm": 1.0, "z_cosine": 0.2}
        for i, m in enumerate(models):
            rec[m] = {
                "loss": 10.0 / step + i,
                "answer": 5.0,
                "first": 3.0,
                "first_acc": min(1.0, step / steps),
            }
        if step % eval_every == 0:
            rec["val"] = {m: {"f1": 0.1, "em": 0.0, "nll_per_token": 3.0, "unique_prediction_ratio": 0.9,
                              "first_token_top1": 0.2} for m in models}  # fmt: skip
            rec["val"]["mean_f1"] = 0.1
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path
