"""Matched-supervision text ceilings: a receiver fine-tuned (LoRA) on the same data as a latent, reading text.

A latent trained on SQuAD beside a zero-shot text prompt mostly measures supervision (answer format).
The fair ceiling is the receiver trained the same way on the text side: the same train split, steps,
batch, learning-rate schedule and answer losses as the latent experiment's Stage B, with a comparable
trainable budget (PEFT LoRA r8 on the layers the latent's LoRA head uses), reading the prompts of a
text-side baseline — ``text`` (the full prompt: ``text-tuned``) or ``select-text-M`` (the select
encoder's kept tokens as text: ``select-text-M-tuned``). The checkpoint is picked on validation F1.

``setup`` is :func:`tune`'s first lines; the loop only iterates; evaluation reuses
:func:`latentwire.evaluation.evaluate.evaluate` with the baseline's own prompt maker, so the tuned ceiling is
scored exactly like the baseline it starts from.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentwire.batching import collate
from latentwire.config import ConfigError, to_dict
from latentwire.evaluation.baselines import parse_baseline, text_prompt_maker
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view, select_examples
from latentwire.heads.lora import LoraArgs, apply_lora, load_lora_state_dict, lora_state_dict
from latentwire.io import write_json
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, answer_ids, eos_id, prompt_for
from latentwire.scoring import answer_logits
from latentwire.training.args import TrainArgs
from latentwire.training.checkpoint import (
    FILENAME,
    frame_digest,
    json_digest,
    pack,
    resume,
    save_checkpoint,
    state_key,
    trainable_weights,
    write_outputs,
)
from latentwire.training.losses import LossArgs, loss_parts
from latentwire.training.nonfinite import SkipBudget, guarded_update
from latentwire.training.optim import continues_schedule, lr_schedule

log = logging.getLogger(__name__)

#: the text-side prompts a tuned ceiling may read (an oracle reads gold: never trained on)
TUNABLE = ("text", "select-text")


@dataclass
class TunedArgs:
    """One tuned text ceiling: which prompts, the LoRA, and the latent's Stage B schedule and losses."""

    kind: str = "text"  # text | select-text-M
    lora: LoraArgs = field(default_factory=lambda: LoraArgs(rank=8))
    loss: LossArgs = field(default_factory=LossArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)

    def validate(self) -> None:
        base, _ = parse_baseline(self.kind)
        if base not in TUNABLE:
            raise ConfigError(f"tuned.kind: {self.kind!r} is not text or select-text-M")
        if self.lora.rank < 1:
            raise ConfigError("tuned.lora.rank: must be >= 1 (a tuned ceiling trains LoRA)")
        if self.loss.w_kd or self.loss.w_hidden or self.loss.w_gist:
            raise ConfigError("tuned.loss: only answer / first-token / K-token CE (no KD, hidden or gist)")

    @property
    def system(self) -> str:
        return f"{self.kind}-tuned"


def stage_b_schedule(train: TrainArgs, seed: int) -> TrainArgs:
    """The latent experiment's Stage B as its own schedule: its steps after the encoder warm-up, with
    the same batch, warm-up, validation cadence and the given seed, and the learning rate of the
    latent's reading heads (``lr × head_lr_scale``: the tuned LoRA is the receiver-side tensor)."""
    return TrainArgs(
        steps=train.steps - train.encoder_warmup_steps,
        batch_size=train.batch_size,
        lr=train.lr * train.head_lr_scale,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_steps,
        grad_clip=train.grad_clip,
        eval_every=train.eval_every,
        val_examples=train.val_examples,
        log_every=train.log_every,
        seed=seed,
        accum_steps=train.accum_steps,
    )


def tuned_step(lm: LoadedModel, args: TunedArgs, maker, batch: list[dict]) -> tuple[torch.Tensor, dict]:
    """The teacher-forced loss of one batch on ``lm`` (LoRA active). Returns (loss, float parts)."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    with torch.no_grad():
        made = maker([model_view(e) for e in batch])  # [(T_i, d)]: frozen embeddings, no grad
    embeds = made.embeds
    if made.prefix is not None:  # scaffold_cache never caches for a receiver with LoRA tensors
        raise RuntimeError("a tuned text ceiling must not read a cached scaffold")
    own = prompt_for(lm.spec, args.prompt)  # the receiver's prompt (registry override)
    golds = [answer_ids(e["answers"][0], tok, own, chat, eos) for e in batch]
    b = collate(lm.model, embeds, golds)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
        logits = answer_logits(lm.model, b)  # (B, A, V)
    parts = loss_parts(args.loss, logits, b.answer_ids)
    loss = sum(parts.values())
    return loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}


class LoraWeights:
    """A receiver's LoRA tensors, as :mod:`~latentwire.training.checkpoint` saves and restores weights."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return lora_state_dict(self.model)

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        load_lora_state_dict(self.model, sd)


def tuned_identity(lm: LoadedModel, args: TunedArgs, train_df, val_df, windows) -> dict:
    """Everything a tuned ceiling's trajectory depends on, except ``train.steps`` (as for a latent)."""
    cfg = to_dict(args)
    cfg["train"].pop("steps")
    return {
        "tuned": cfg,
        "model": {"spec": to_dict(lm.spec), "manifest": lm.manifest},
        "prompt": to_dict(prompt_for(lm.spec, args.prompt)),  # the model's own prompt, shots included
        "data": {"train": frame_digest(train_df), "validation": frame_digest(val_df)},
        "windows": json_digest(windows) if windows else None,
    }


def tune(
    lm: LoadedModel,
    args: TunedArgs,
    train_df,
    val_df,
    out_dir: str | Path,
    windows: Mapping[str, Mapping] | None = None,
    state_dir: str | Path | None = None,
) -> dict:
    """Train LoRA on ``lm`` reading ``args.kind`` prompts; write ``best.safetensors`` (LoRA tensors),
    ``train_log.jsonl`` and ``train_summary.json`` into ``out_dir``, each whole at the end; return the
    summary.

    Resumable like :func:`latentwire.training.loop.train`: one atomic checkpoint (LoRA, best LoRA, optimizer,
    scheduler, RNG, log) at every validation in ``state_dir/<key>/`` (default ``out_dir/.state``),
    keyed by :func:`tuned_identity`; a rerun after a kill resumes from it, other settings start afresh.

    ``windows``: content text -> select-windows record covering the train and validation examples
    (``select-text-M`` only)."""
    out_dir = Path(out_dir)
    t = args.train
    identity = tuned_identity(lm, args, train_df, val_df, windows)
    key = state_key(identity)
    state_path = Path(state_dir or out_dir / ".state") / key / FILENAME
    write_json(state_path.parent / "identity.json", identity)  # what the key hashes, for a reader
    torch.manual_seed(t.seed)
    params = apply_lora(lm.model, args.lora)
    weights = LoraWeights(lm.model)
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(t))
    maker = text_prompt_maker(lm, args.prompt, args.kind, windows)
    train_rows = select_examples(train_df, EvalArgs(n_examples=0))
    val_rows = select_examples(val_df, EvalArgs(n_examples=t.val_examples, seed=t.seed))
    ev = EvalArgs(**{**to_dict(args.eval), "n_examples": 0})
    unit = resume(state_path, key, weights, opt, sched, continues_schedule(t), best={"f1": -1.0, "step": -1})
    step, best, log_rows, best_weights = unit["step"], unit["best"], unit["records"], unit["best_weights"]
    t0, seconds = time.time(), unit["train_seconds"]
    skips = SkipBudget.from_records(t.steps, "tune", log_rows)  # updates skipped (not finite)
    while step < t.steps:
        step += 1
        rng = np.random.default_rng(t.seed * 1_000_003 + step - 1)  # the latent loop's batches
        batch = [train_rows[i] for i in rng.choice(len(train_rows), t.batch_size, replace=False)]
        loss, record = tuned_step(lm, args, maker, batch)
        loss.backward()
        record.update(step=step, lr=sched.get_last_lr()[0])
        guarded_update(params, opt, t.grad_clip, record)  # a bad batch must not poison the LoRA weights
        skips.check(step, record, [e.get("id") for e in batch])
        sched.step()
        opt.zero_grad(set_to_none=True)
        validated = step % t.eval_every == 0 or step == t.steps
        if validated:
            _, s = evaluate(lm, val_rows, maker, args.prompt, ev, desc="val")
            record["val"] = {k: s[k] for k in ("f1", "em", "nll_per_token", "unique_prediction_ratio")}
            log.info("step %d validation %s", step, record["val"])
            if s["f1"] > best["f1"]:
                best = {"f1": s["f1"], "step": step}
                best_weights = trainable_weights(weights)
        elif step % t.log_every == 0 or step == 1:
            log.info("step %d %s", step, record)
        log_rows.append(json.loads(json.dumps(record)))  # plain JSON types, as the log file holds them
        if validated:
            state = {"step": step, "best": best, "stopped": "completed", "records": log_rows}
            state.update(best_weights=best_weights, train_seconds=seconds + time.time() - t0)
            save_checkpoint(state_path, pack(key, weights, opt, sched, t.steps, state))
    summary = {
        "steps": t.steps,
        "best": best,
        "train_seconds": seconds + time.time() - t0,
        "trainable_parameters": sum(p.numel() for p in params),
        "skipped_nonfinite_steps": skips.skipped,
        "system": args.system,
        "state": str(state_path),
    }
    write_outputs(
        out_dir, best_weights if best_weights is not None else trainable_weights(weights), log_rows, summary
    )
    return summary
