"""Encoder pretraining through the frozen receivers: continuation + reconstruction (ARC-Encoder's recipe).

Before any QA supervision, the encoder (and each receiver's projector) learns to make the frozen
receivers read Z as text. Every example is one context of the TRAIN split's articles (no
validation / test article may appear: :func:`pretrain_contexts` refuses them), turned into one of
two tasks:

- **continuation** (share ``continuation_share``): the first s words of the context (s drawn in
  [40 %, 80 %] of it, at most ``max_segment_words``) are compressed; the receiver, reading only
  ``[Z | continue_cue]``, must continue with the next ``continuation_tokens`` tokens of the context;
- **reconstruction**: the first ``max_segment_words`` words are compressed and the receiver reads
  ``[Z | reconstruct_cue]`` and reproduces them (up to ``reconstruct_tokens`` tokens).

The receivers see plain soft tokens, no chat template (as ARC pretrains on base decoders); QA
fine-tuning later puts Z in the prompt contract's content slot. A step encodes the batch once and runs
each receiver's teacher-forced CE in turn against a detached Z leaf, as
:func:`latentwire.training.step.train_step` does (or one sampled receiver with ``sample_receiver``). The
output checkpoint holds the encoder's and the projectors' trainable tensors; a fine-tuning experiment
that names this run (``latent.encoder.pretrained``) starts from it (:func:`load_pretrained`).

Shapes: B batch, M slots, d_z latent width, S soft tokens a receiver reads, A target tokens.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.profiler import record_function

from latentwire.batching import collate, embed_ids
from latentwire.config import ConfigError
from latentwire.encoders import load_trainable_state_dict, source_model_name
from latentwire.heads.regress_init import fit_projectors
from latentwire.io import atomic_path, write_json
from latentwire.latent.interlingua import Interlingua, LatentArgs
from latentwire.latent.prompts import trim_soft
from latentwire.models import LoadedModel
from latentwire.scoring import answer_logits
from latentwire.training.nonfinite import SkipBudget, guarded_update
from latentwire.training.optim import make_optimizer

log = logging.getLogger(__name__)
TASKS = ("continuation", "reconstruction")
KEEP = ("last", "best")  # which pretraining state encoder.safetensors holds
SEGMENT_STARTS = ("start", "random")  # a task's text from the context's first word, or a drawn one
PRETRAINED_PARTS = ("encoder.", "adapters.")  # what a pretraining checkpoint holds


@dataclass
class PretrainArgs:
    """Schedule and task mix of one pretraining run."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    head_lr_scale: float = 1.0  # the projectors train at lr × this, the encoder at lr (training.optim)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    continuation_share: float = 0.8  # the rest is reconstruction
    max_segment_words: int = 160  # words of a context that are compressed, at most
    segment_start: str = "start"  # where a task's text begins: the context's first word, or "random"
    continuation_tokens: int = 64  # receiver tokens of a continuation target, at most
    reconstruct_tokens: int = 256  # receiver tokens of a reconstruction target, at most
    continue_cue: str = ""  # real tokens after Z that name the task
    reconstruct_cue: str = "\nRepeat the text above:\n"
    sample_receiver: bool = False  # one receiver per step (ARC) instead of every receiver in turn
    heldout_contexts: int = 32  # train-split contexts kept out of the steps, for the loss curve
    eval_every: int = 0  # held-out loss every N steps (0: before and after the steps only)
    keep: str = "last"  # the checkpoint written: the last step's, or "best" held-out loss (eval_every)
    log_every: int = 10

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ConfigError("pretrain: steps and batch_size must be ≥ 1, warmup_steps ≥ 0")
        if not 0.0 <= self.continuation_share <= 1.0:
            raise ConfigError("pretrain.continuation_share: must be in [0, 1]")
        if min(self.max_segment_words, self.continuation_tokens, self.reconstruct_tokens) < 1:
            raise ConfigError("pretrain: max_segment_words, continuation_tokens, reconstruct_tokens ≥ 1")
        if self.heldout_contexts < 0 or self.eval_every < 0:
            raise ConfigError("pretrain: heldout_contexts and eval_every must be ≥ 0")
        if self.segment_start not in SEGMENT_STARTS:
            raise ConfigError(
                f"pretrain.segment_start: {self.segment_start!r} is not one of {list(SEGMENT_STARTS)}"
            )
        if self.keep not in KEEP:
            raise ConfigError(f"pretrain.keep: {self.keep!r} is not one of {list(KEEP)}")
        if self.keep == "best" and not (self.eval_every and self.heldout_contexts):
            raise ConfigError("pretrain.keep: 'best' needs eval_every ≥ 1 and heldout_contexts ≥ 1")
        if not (
            math.isfinite(self.lr)
            and self.lr > 0
            and math.isfinite(self.head_lr_scale)
            and self.head_lr_scale > 0
        ):
            raise ConfigError("pretrain: lr and head_lr_scale must be positive numbers")


@dataclass
class PretrainRunArgs:
    """Everything one ``pretrain-encoder`` job needs: the modules and the schedule."""

    latent: LatentArgs = field(default_factory=LatentArgs)
    pretrain: PretrainArgs = field(default_factory=PretrainArgs)
    device: str = "auto"

    def validate(self) -> None:
        a = self.latent
        if not a.shallow or a.deep_prefix.enabled or a.coprocessor.enabled or a.lora.rank or a.gist_tokens:
            raise ConfigError("pretrain.latent: pretraining trains the encoder + shallow projectors only")


def pretrain_contexts(train_df, held_out: list) -> list[str]:
    """The distinct contexts of the train split, refusing any article of the held-out splits.

    ``held_out``: the validation / test frames. Raises ValueError when a train row is not marked
    ``train``, or an article title or context of a held-out split appears among the train rows.
    """
    splits = set(train_df["split"])
    if splits != {"train"}:
        raise ValueError(f"pretraining reads the train split only, got splits {sorted(splits)}")
    titles = set(train_df["title"])
    bad_titles = sorted(titles & {t for df in held_out for t in df["title"]})
    if bad_titles:
        raise ValueError(f"pretraining: held-out articles among the train rows: {bad_titles[:5]}")
    contexts = list(dict.fromkeys(str(c) for c in train_df["context"]))
    forbidden = {str(c) for df in held_out for c in df["context"]}
    if forbidden & set(contexts):
        raise ValueError("pretraining: a held-out context appears among the train rows")
    return contexts


def make_task(context: str, task: str, args: PretrainArgs, rng: np.random.Generator) -> tuple[str, str]:
    """(segment the encoder reads, target text the receiver must produce) for one context. With
    ``segment_start: random`` the task reads the context from a word drawn uniformly in its first half
    (more distinct tasks per context: the offline split has only ~1.5k train contexts)."""
    words = context.split()
    if args.segment_start == "random" and len(words) >= 2:
        words = words[int(rng.integers(0, len(words) // 2 + 1)) :]
    if task == "continuation" and len(words) >= 2:
        s = int(len(words) * rng.uniform(0.4, 0.8))
        s = max(1, min(s, args.max_segment_words, len(words) - 1))
        return " ".join(words[:s]), " " + " ".join(words[s:])
    segment = " ".join(words[: args.max_segment_words])
    return segment, segment


def target_ids(lm: LoadedModel, targets: list[str], tasks: list[str], args: PretrainArgs) -> list[list[int]]:
    """Receiver token ids of each target, cut to its task's budget (at least one token)."""
    out = []
    for text, task in zip(targets, tasks):
        cap = args.continuation_tokens if task == "continuation" else args.reconstruct_tokens
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:cap]
        out.append(ids or [lm.tokenizer.eos_token_id or 0])
    return out


def receiver_loss(
    lm: LoadedModel,
    il: Interlingua,
    z: torch.Tensor,
    targets: list[str],
    tasks: list[str],
    args: PretrainArgs,
    filled: list[int] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean target-token CE of receiver ``lm`` reading Z (B, M, d_z); also the mean per task.
    ``filled``: per row, the slots its message carries (``latent.trim_pad``; None: all M)."""
    soft = il.read(z, lm.spec.name, filled).soft.to(lm.dtype)  # (B, S, d)
    soft = trim_soft(soft, filled, il.args.adapter.markers)  # [(S_i, d)]: the slots each message carries
    cues = {t: getattr(args, "continue_cue" if t == "continuation" else "reconstruct_cue") for t in TASKS}
    cue_emb = {
        t: embed_ids(lm.model, lm.tokenizer(c, add_special_tokens=False)["input_ids"], lm.device)
        if c
        else None
        for t, c in cues.items()
    }
    prompts = [
        soft[i] if cue_emb[t] is None else torch.cat([soft[i], cue_emb[t]]) for i, t in enumerate(tasks)
    ]
    b = collate(lm.model, prompts, target_ids(lm, targets, tasks, args))
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
        logits = answer_logits(lm.model, b)  # (B, A, V)
    B, A, V = logits.shape
    # over (B·A, V) rows: the vocabulary contiguous. The (B, V, A) layout of logits.transpose(1, 2)
    # took PyTorch's spatial softmax kernel, 350 of a step's 548 device-ms on an H100 (2026-12-07)
    tok = F.cross_entropy(
        logits.reshape(B * A, V), b.answer_ids.reshape(B * A), ignore_index=-100, reduction="none"
    ).view(B, A)
    real = (b.answer_ids != -100).float()
    loss = (tok * real).sum() / real.sum()
    per = ((tok * real).sum(1) / real.sum(1)).detach()  # (B,)
    parts = {t: float(per[[i for i, x in enumerate(tasks) if x == t]].mean()) for t in TASKS if t in tasks}
    return loss, parts


def draw_batch(contexts: list[str], args: PretrainArgs, rng: np.random.Generator, n: int):
    """(segments, targets, tasks) of ``n`` contexts drawn without replacement, each task by the mix."""
    picks = rng.choice(len(contexts), min(n, len(contexts)), replace=False)
    tasks = ["continuation" if rng.random() < args.continuation_share else "reconstruction" for _ in picks]
    pairs = [make_task(contexts[i], t, args, rng) for i, t in zip(picks, tasks)]
    return [p[0] for p in pairs], [p[1] for p in pairs], tasks


def step_rng(args: PretrainArgs, step: int) -> np.random.Generator:
    """The generator of step ``step``'s batch (and receiver draw): reproducible without saved state."""
    return np.random.default_rng(args.seed * 1_000_003 + step)


def pretrain_step(lms, il: Interlingua, args: PretrainArgs, contexts, step: int, params, opt, sched) -> dict:
    """One optimizer step on a fresh batch (per-step RNG: reproducible without state). Returns its log."""
    rng = step_rng(args, step)
    segments, targets, tasks = draw_batch(contexts, args, rng, args.batch_size)
    chosen = [lms[int(rng.integers(len(lms)))]] if args.sample_receiver else lms
    with record_function("encode"):  # the labels are the regions `latentwire bench` profiles
        z = il.encode(segments)  # (B, M, d_z), with the encoder's graph
        filled = il.filled(segments)
    z_leaf = z.detach().requires_grad_(True)
    record: dict = {"step": step + 1, "lr": sched.get_last_lr()[0]}
    for lm in chosen:  # one receiver's graph at a time
        with record_function(f"forward:{lm.spec.name}"):
            loss, parts = receiver_loss(lm, il, z_leaf, targets, tasks, args, filled)
        with record_function(f"backward:{lm.spec.name}"):
            (loss / len(chosen)).backward()
        record[lm.spec.name] = {"loss": float(loss.detach()), **parts}
    with record_function("encoder_backward"):
        z.backward(z_leaf.grad)
    with record_function("update"):
        guarded_update(params, opt, args.grad_clip, record)  # skipped if the gradient is not finite
    sched.step()
    opt.zero_grad(set_to_none=True)
    return record


@torch.no_grad()
def heldout_loss(lms, il: Interlingua, args: PretrainArgs, contexts: list[str]) -> dict:
    """Mean CE per receiver and task on fixed held-out train contexts (the same tasks every time)."""
    if not contexts:
        return {}
    was = il.training
    il.eval()
    rng = np.random.default_rng(args.seed + 7)
    segments, targets, tasks = draw_batch(contexts, args, rng, len(contexts))
    out = {}
    for lm in lms:
        losses, parts_all = [], {}
        for s in range(0, len(segments), args.batch_size):
            sl = slice(s, s + args.batch_size)
            seg = segments[sl]
            loss, parts = receiver_loss(lm, il, il.encode(seg), targets[sl], tasks[sl], args, il.filled(seg))
            losses.append(float(loss))
            for k, v in parts.items():
                parts_all.setdefault(k, []).append(v)
        out[lm.spec.name] = {
            "loss": float(np.mean(losses)),
            **{k: float(np.mean(v)) for k, v in parts_all.items()},
        }
    il.train(was)
    return out


def _mean_loss(heldout: dict) -> float:
    """The mean over receivers of their held-out loss (``inf`` without held-out contexts)."""
    return float(np.mean([v["loss"] for v in heldout.values()])) if heldout else math.inf


def _schedule(args: PretrainArgs):
    def f(step: int) -> float:  # linear warm-up, cosine to 10 %
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(args.steps - args.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def regress_start(il: Interlingua, run: PretrainRunArgs, lms, sources, train_ctx: list[str]) -> dict:
    """``adapter.init: regress`` before pretraining: each projector starts as the ridge map from Z to
    the mean input embedding of the tokens each slot pools (:mod:`latentwire.heads.regress_init`),
    fitted on the first ``adapter.init_texts`` train contexts (already in a seeded order), cut to
    ``max_segment_words`` words as the reconstruction task compresses them. Returns the fit R²."""
    by_name = {lm.spec.name: lm for lm in [*lms, *sources]}
    src = by_name.get(source_model_name(run.latent.encoder) or "")
    if src is None:
        raise ConfigError("pretrain: adapter.init regress needs an encoder with a source_model")
    words = run.pretrain.max_segment_words
    texts = [" ".join(c.split()[:words]) for c in train_ctx[: run.latent.adapter.init_texts]]
    report = fit_projectors(il, lms, src, texts)
    log.info("regress start before pretraining: %s", report)
    return report


def pretrain(
    lms: list[LoadedModel],
    il: Interlingua,
    run: PretrainRunArgs,
    contexts: list[str],
    out_dir,
    sources: list[LoadedModel] | None = None,
) -> dict:
    """Pretrain ``il``'s encoder and projectors on ``contexts``; writes ``encoder.safetensors``,
    ``pretrain_log.jsonl`` and ``pretrain_summary.json`` under ``out_dir``. Returns the summary.
    With ``eval_every`` the held-out loss is measured every N steps (``heldout_curve``); with ``keep:
    best`` the checkpoint (and ``il``) is the evaluated state, the start included, of the lowest mean
    held-out loss over receivers (``checkpoint_step``; ``heldout_after`` is its loss, ``heldout_last``
    the last step's). The held-out contexts are train-split contexts, never validation or test.
    ``sources``: the encoder's source model where it is not a receiver (``adapter.init: regress``)."""
    a = run.pretrain
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_held = min(a.heldout_contexts, len(contexts) // 2)
    order = np.random.default_rng(a.seed).permutation(len(contexts))
    held = [contexts[i] for i in order[:n_held]]
    train_ctx = [contexts[i] for i in order[n_held:]]
    fit = (
        regress_start(il, run, lms, sources or [], train_ctx)
        if run.latent.adapter.init == "regress"
        else None
    )
    params = il.trainable_parameters()
    opt = make_optimizer(il, a.lr, a.weight_decay, a.head_lr_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(a))
    start = heldout_loss(lms, il, a, held)
    log.info("held-out loss before pretraining: %s", start)
    t0 = time.time()
    skips = SkipBudget(a.steps, "pretrain")
    ckpt = out_dir / "encoder.safetensors"
    curve = [{"step": 0, **start}] if a.eval_every else []
    best = (_mean_loss(start), 0)  # (mean held-out loss over receivers, step) of the kept state
    if a.keep == "best":
        save_pretrained(il, ckpt)  # the start is a candidate too: pretraining may only overfit
    il.train()
    with open(out_dir / "pretrain_log.jsonl", "w", encoding="utf-8") as f:
        for step in range(a.steps):
            record = pretrain_step(lms, il, a, train_ctx, step, params, opt, sched)
            skips.check(step + 1, record)
            f.write(json.dumps(record) + "\n")
            if (step + 1) % a.log_every == 0 or step == 0:
                log.info("pretrain step %d %s", step + 1, record)
            if a.eval_every and ((step + 1) % a.eval_every == 0 or step + 1 == a.steps):
                now = heldout_loss(lms, il, a, held)
                curve.append({"step": step + 1, **now})
                log.info("held-out loss at step %d: %s", step + 1, now)
                if a.keep == "best" and _mean_loss(now) < best[0]:
                    best = (_mean_loss(now), step + 1)
                    save_pretrained(il, ckpt)  # written atomically, over the previous best
    curve_end = curve[-1] if curve else {"step": a.steps, **heldout_loss(lms, il, a, held)}
    kept = best[1] if a.keep == "best" else a.steps
    if a.keep == "best":
        load_pretrained(il, ckpt)  # the module in memory is the state that was written
        log.info("kept the state of step %d (mean held-out loss %.4f)", kept, best[0])
    else:
        save_pretrained(il, ckpt)
    losses = {c["step"]: {k: v for k, v in c.items() if k != "step"} for c in [*curve, curve_end]}
    last = losses[a.steps]
    log.info("held-out loss after pretraining: %s", last)
    summary = {
        "steps": a.steps,
        "contexts": len(train_ctx),
        "heldout_contexts": len(held),
        "heldout_before": start,
        "heldout_after": losses[kept],
        "heldout_last": last,
        "heldout_curve": curve,
        "checkpoint_step": kept,
        "train_seconds": time.time() - t0,
        "trainable_parameters": sum(p.numel() for p in params),
        "skipped_nonfinite_steps": skips.skipped,
    }
    if fit is not None:
        summary["regress_fit"] = fit
    write_json(out_dir / "pretrain_summary.json", summary)
    return summary


def save_pretrained(il: Interlingua, path: str | Path) -> None:
    """The encoder's and the projectors' trainable tensors (safetensors, written atomically)."""
    sd = {k: v.contiguous() for k, v in il.trainable_state_dict().items() if k.startswith(PRETRAINED_PARTS)}
    with atomic_path(Path(path)) as tmp:
        save_file(sd, str(tmp))


def load_pretrained(il: Interlingua, path: str | Path) -> None:
    """Start ``il`` from a pretraining checkpoint: the encoder strictly (same architecture), and the
    projectors strictly when the checkpoint has them (same receivers and adapter)."""
    sd = load_file(str(path))
    other = sorted(k for k in sd if not k.startswith(PRETRAINED_PARTS))
    if other:
        raise KeyError(f"{path}: not a pretraining checkpoint (keys {other[:3]})")
    load_trainable_state_dict(
        il.encoder, {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    )
    adapters = {k[len("adapters.") :]: v for k, v in sd.items() if k.startswith("adapters.")}
    if adapters:
        il.adapters.load_state_dict(adapters, strict=True)
    log.info("started from pretrained %s (%d tensors)", path, len(sd))


ARCH_FIELDS = ("name", "source_model", "d_z", "drop_last", "train_layers", "lora_rank")


def check_pretrained(exp: str, latent: LatentArgs, pretrains: dict[str, PretrainRunArgs]) -> None:
    """A fine-tuning experiment that names a pretraining run must build the same encoder and
    projectors (pooling factor, slot cap and masks may differ: they hold no parameters)."""
    name = latent.encoder.pretrained
    if name is None:
        return
    where = f"latent.experiments.{exp}.latent.encoder.pretrained"
    if name not in pretrains:
        raise ConfigError(f"{where}: {name!r} is not a pretrain run; known: {sorted(pretrains)}")
    pre = pretrains[name].latent
    diff = [k for k in ARCH_FIELDS if getattr(pre.encoder, k) != getattr(latent.encoder, k)]
    diff += [
        f"adapter.{k}"
        for k in ("kind", "hidden", "markers", "calibrate_rms")  # calibrate_rms: the log_scale gain
        if getattr(pre.adapter, k) != getattr(latent.adapter, k)
    ]
    if diff:
        raise ConfigError(
            f"{where}: pretrain run {name!r} builds another encoder/projector ({', '.join(diff)})"
        )
