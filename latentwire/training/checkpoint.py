"""Resumable training state: ONE atomic checkpoint file per run identity, outside the outputs.

A workflow manager deletes a failed job's declared outputs (Snakemake does, before a rerun), so the
state a rerun resumes from lives in its own folder, ``state_dir/<key>/checkpoint.pt``, where ``key``
hashes everything the trajectory depends on: the whole run config except ``train.steps``, each
model's registry entry and manifest (with the export's sha256), the training and validation data,
and the teacher caches. A changed setting therefore finds no state and starts afresh; it never
resumes 0 steps or loads weights of another shape.

The checkpoint is one file, written to a temporary name, fsynced and renamed: weights, best
weights, optimizer and scheduler state, the log records up to its step, and the python / numpy /
torch / CUDA random states (bit-exact resume with dropout). It records its step, its key and its
format, all checked when it is read (``torch.load(weights_only=True)``: no code runs on load). The
outputs (best weights, log, summary) are written from it at the end, so they are always whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from latentwire.config import ConfigError
from latentwire.io import atomic_path, write_json, write_jsonl

log = logging.getLogger(__name__)

#: Bumped whenever the checkpoint's content changes meaning; part of the key.
FORMAT = 2
FILENAME = "checkpoint.pt"


def frame_digest(df) -> str:
    """sha256 of a data frame's records as JSON (column order and row order included)."""
    return hashlib.sha256(df.to_json(orient="records").encode()).hexdigest()


def file_identity(path: str | Path | None) -> Any:
    """A file's sha256 (None for no file): content, not path or time, identifies the input."""
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def json_digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (keys sorted): e.g. the select windows a run reads."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def state_key(identity: dict) -> str:
    """A short stable hash of a JSON-serialisable run identity (see module docstring)."""
    blob = json.dumps({"format": FORMAT, **identity}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def rng_state() -> dict:
    """Every global random state a training step may draw from (dropout draws from torch's)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict) -> None:
    """Put back the random states :func:`rng_state` recorded."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    # random.setstate wants tuples; a round trip may hand back lists
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(path: Path, unit: dict) -> None:
    """Write ``unit`` as one file atomically: a reader sees the old checkpoint or the new one, whole."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(unit, f)
            f.flush()
            os.fsync(f.fileno())
    log.info("checkpoint: step %d -> %s", unit["step"], path)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path`` if there is one; every recorded fact is checked against the file."""
    if not path.is_file():
        return None
    try:
        unit = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: the message names it
        raise ConfigError(f"{path}: unreadable checkpoint ({e}); delete it to start over") from e
    need = {"format", "key", "step", "log", "weights", "best_weights", "opt", "sched", "rng", "best"}
    missing = sorted(need - set(unit)) if isinstance(unit, dict) else sorted(need)
    if missing:
        raise ConfigError(f"{path}: not a latentwire checkpoint (missing {missing}); delete it to start over")
    if unit["format"] != FORMAT or unit["key"] != key:
        raise ConfigError(
            f"{path}: checkpoint of format {unit['format']} / key {unit['key']}, expected "
            f"{FORMAT} / {key}; delete it to start over"
        )
    steps = [r["step"] for r in json.loads(unit["log"])]
    if steps != list(range(1, unit["step"] + 1)):
        raise ConfigError(f"{path}: records steps {steps[:3]}..{steps[-3:]} but says step {unit['step']}")
    return unit


def trainable_weights(il) -> dict[str, torch.Tensor]:
    """A detached copy of the interlingua's trainable weights (what checkpoints and outputs hold)."""
    return {k: v.detach().clone().contiguous() for k, v in il.trainable_state_dict().items()}


def fresh_state(best: dict | None = None) -> dict:
    """The loop's state before step 1 (``best``: the loop's "nothing validated yet" record)."""
    return {
        "step": 0,
        "best": dict(best) if best is not None else {"mean_f1": -1.0, "step": -1},
        "stopped": "completed",
        "records": [],
        "best_weights": None,
        "train_seconds": 0.0,
    }


def pack(key: str, il, opt, sched, train_steps: int, state: dict) -> dict:
    """The checkpoint file's content: the loop ``state`` plus weights, optimizer, scheduler and RNGs."""
    return {
        "format": FORMAT,
        "key": key,
        "train_steps": train_steps,
        "step": state["step"],
        "best": state["best"],
        "stopped": state["stopped"],
        "log": json.dumps(state["records"]),
        "weights": trainable_weights(il),
        "best_weights": state["best_weights"],
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "rng": rng_state(),
        "train_seconds": state["train_seconds"],
    }


def resume(
    path: Path,
    key: str,
    il,
    opt,
    sched,
    continues: Callable[[int, int], bool],
    best: dict | None = None,
) -> dict:
    """Load the checkpoint at ``path`` into ``il``, ``opt``, ``sched`` and the global RNGs; return the
    loop state (:func:`fresh_state` when there is none). ``continues(train_steps then, steps done)``
    says whether the current schedule continues it (only ``train.steps`` is outside the key);
    if not, training starts afresh. ``il`` is anything with ``trainable_state_dict()`` and
    ``load_trainable_state_dict(sd)`` (the interlingua, or a receiver's LoRA tensors); ``best`` is the
    fresh state's best record."""
    saved = load_checkpoint(path, key)
    if saved is None:
        return fresh_state(best)
    done = saved["step"]
    if not continues(saved["train_steps"], done):
        log.warning(
            "%s: %d steps done of a run of train.steps %d whose schedule this one does not continue; "
            "starting afresh",
            path,
            done,
            saved["train_steps"],
        )
        return fresh_state(best)
    il.load_trainable_state_dict(saved["weights"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    restore_rng(saved["rng"])
    log.info("resuming from step %d (%s)", done, path)
    state = {k: saved[k] for k in ("step", "best", "stopped", "best_weights", "train_seconds")}
    return {**state, "records": json.loads(saved["log"])}


def write_outputs(out_dir: Path, best_weights: dict, records: list[dict], summary: dict) -> None:
    """The declared outputs, each atomically (the summary last: it marks the run finished)."""
    with atomic_path(Path(out_dir) / "best.safetensors") as tmp:
        save_file(best_weights, str(tmp))
    write_jsonl(Path(out_dir) / "train_log.jsonl", records)
    write_json(Path(out_dir) / "train_summary.json", summary)
