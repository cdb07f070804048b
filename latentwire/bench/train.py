"""Phases (a) and (b): the minimal-work ceiling of a latent training row and the real Stage B step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from latentwire.batching import Batch, pad_answers
from latentwire.bench.args import BenchArgs
from latentwire.bench.layout import gold_ids, latent_prompt_len, scaffold_head
from latentwire.bench.profile import profile_step
from latentwire.evaluation.timing import peak_gb, reset_peak, summarize_times, timed
from latentwire.kv_prefix import with_prefix
from latentwire.latent.interlingua import Interlingua
from latentwire.models import LoadedModel
from latentwire.scaffold_cache import scaffold_prefix
from latentwire.scoring import answer_logits
from latentwire.training.args import LatentRunArgs
from latentwire.training.losses import masked_ce
from latentwire.training.step import train_step


def measure_ceiling(
    lms: list[LoadedModel],
    run: LatentRunArgs,
    examples: list[dict],
    args: BenchArgs,
    device: torch.device,
    minimal: bool = True,
) -> dict:
    """Bare forward + backward to a leaf per receiver, then all receivers in sequence."""
    reset_peak(device)
    passes = {lm.spec.name: _ceiling_pass(lm, run, examples, args.slots, minimal) for lm in lms}
    out = {}
    for n, f in passes.items():
        warm: list[float] = []
        out[n] = summarize_times(timed(f, args.warmup, args.iters, device, warm), args.batch_size, warm)
    warm = []
    times = timed(lambda: [f() for f in passes.values()], args.warmup, args.iters, device, warm)
    out["all"] = summarize_times(times, args.batch_size, warm)
    out["all"]["peak_memory_gb"] = peak_gb(device)
    return out


def _ceiling_pass(
    lm: LoadedModel, run: LatentRunArgs, examples: list[dict], slots: int, minimal: bool = True
) -> Callable[[], None]:
    """A closure running one bare step of ``lm``: minimal, the Z-dependent columns
    (M + S_suf + A) after the cached scaffold head; else the whole row (T_p + A columns)."""
    head = scaffold_head(lm, run, examples)  # S_pre ids, the same for every row
    T_p = latent_prompt_len(lm, run, examples, slots) - (len(head) if minimal else 0)
    gold = pad_answers(gold_ids(lm, run, examples), lm.device)  # (B, A)
    B, A = gold.shape
    d = lm.model.get_input_embeddings().weight.shape[1]
    x0 = torch.randn(B, T_p + A, d, device=lm.device, dtype=lm.dtype) * 0.02  # (B, T_p + A, d)
    positions = torch.arange(T_p + A, device=lm.device).expand(B, -1)  # (B, T_p + A)
    prefix = scaffold_prefix(lm.model, head, B) if minimal else None  # computed once, outside the step
    if minimal and prefix is None:
        raise ValueError(
            f"{lm.spec.name}: no cached scaffold for the minimal ceiling (a trainable receiver?)"
        )

    def step() -> None:
        x = x0.detach().requires_grad_(True)  # the soft-prefix leaf: the only thing that gets a grad
        batch = Batch(x, None, positions, T_p, gold)  # no mask: every row is full length
        kw = {}
        if prefix is not None:  # mask and positions extended by S_pre, a fresh cache of the head
            batch = dataclasses.replace(batch, attention_mask=torch.ones_like(positions))
            batch, kw = with_prefix(lm.model, batch, prefix)
        with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
            logits = answer_logits(lm.model, batch, **kw)  # (B, A, V) float32
        masked_ce(logits, gold).backward()

    return step


def measure_step(
    lms: list[LoadedModel],
    il: Interlingua,
    run: LatentRunArgs,
    examples: list[dict],
    args: BenchArgs,
    device: torch.device,
) -> dict:
    """Time :func:`latentwire.training.step.train_step` (all receivers, optimizer included) on one batch."""
    params = il.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=run.train.lr, weight_decay=run.train.weight_decay)
    il.train()
    records: list[dict] = []
    reset_peak(device)

    def step() -> None:
        records.append(train_step(lms, il, run, examples, params, opt))

    warm: list[float] = []
    times = timed(step, args.warmup, args.iters, device, warm)
    out = {"all": summarize_times(times, args.batch_size, warm)}
    out["all"]["peak_memory_gb"] = peak_gb(device)
    out["record"] = records[-1]  # losses of the last step: finite numbers say the step is real
    if args.profile_steps:
        out["profile"] = profile_step(step, args.profile_steps, device)
    out["trainable_parameters"] = sum(p.numel() for p in params)
    return out
