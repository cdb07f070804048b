"""Phase (d): the encoder pretraining step (issue #14's continuation + reconstruction), timed.

Pretraining length is what the pooled encoder lacks most (ARC-Encoder pretrains 100k steps; a lent
30-minute device session fits a few hundred), so its step time decides how much a session buys.
This phase times :func:`latentwire.training.pretrain.pretrain_step` itself (encoder forward, every
receiver's forward and backward, the encoder's backward, clipping and AdamW) on synthetic contexts
of :data:`latentwire.models.synthetic.WORDS`, uncompiled as ``pretrain-encoder`` runs it, and with
``profile_steps`` says where the time goes (regions ``encode``, ``forward:<model>``,
``backward:<model>``, ``encoder_backward``, ``update``).

Beside the time it reports the step's work in tokens (encoder tokens, receiver positions, answer
positions whose logits are kept) and the matmul FLOPs they imply; ``achieved_tflops`` is the timed
steps' FLOPs over their time, to set against the machine's matmul rate (the floor a faster
implementation could approach).
"""

from __future__ import annotations

import random

import torch

from latentwire.bench.args import BenchArgs
from latentwire.bench.profile import profile_step
from latentwire.evaluation.timing import peak_gb, reset_peak, summarize_times, timed
from latentwire.latent.interlingua import Interlingua
from latentwire.models import LoadedModel
from latentwire.models.synthetic import WORDS
from latentwire.training.optim import make_optimizer
from latentwire.training.pretrain import PretrainArgs, draw_batch, pretrain_step, step_rng, target_ids


def synthetic_contexts(n: int, words: int, seed: int) -> list[str]:
    """``n`` contexts of ``words`` random :data:`WORDS` each (one token per word in the bench tokenizer)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def _layer_params(lm: LoadedModel) -> tuple[int, int]:
    """(decoder-layer parameters, LM-head parameters) of a receiver: what its matmuls multiply."""
    layers = sum(p.numel() for p in lm.model.get_decoder().layers.parameters())
    return layers, lm.model.get_output_embeddings().weight.numel()


def step_work(
    lms: list[LoadedModel], il: Interlingua, a: PretrainArgs, contexts: list[str], step: int
) -> dict:
    """Tokens and matmul FLOPs of step ``step``'s batch (the same draw as ``pretrain_step``'s).

    Encoder: 6 × trainable parameters per token read (forward, input and weight gradients), 2 × its
    other parameters but the receivers' embedding tables (forward only). Receivers (frozen): 4 ×
    layer parameters per position (forward and input gradient) over slots + cue + padded target,
    and 6 × head parameters per kept logit column. Attention's score matmuls are left out (rows
    are short). The bench tokenizer is every receiver's and the encoder's (one token a word)."""
    segments, targets, tasks = draw_batch(contexts, a, step_rng(a, step), a.batch_size)
    tok, cap = lms[0].tokenizer, il.args.encoder.max_enc_tokens
    n_enc = sum(min(len(tok(s, add_special_tokens=False)["input_ids"]), cap) for s in segments)
    tables = {id(lm.model.get_input_embeddings().weight) for lm in lms}
    enc = [p for p in il.encoder.parameters() if id(p) not in tables]
    trained = sum(p.numel() for p in enc if p.requires_grad)
    frozen = sum(p.numel() for p in enc if not p.requires_grad)
    out: dict = {
        "encoder_tokens": n_enc,
        "encoder_flops": (6 * trained + 2 * frozen) * n_enc,
        "receivers": {},
    }
    filled = il.filled(segments) or [il.args.read_slots()] * len(segments)
    total = out["encoder_flops"]
    for lm in lms:
        tgt = target_ids(lm, targets, tasks, a)
        cues = {
            t: len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) if c else 0
            for t, c in (("continuation", a.continue_cue), ("reconstruction", a.reconstruct_cue))
        }
        A = max(len(t) for t in tgt)
        row = max(f + cues[k] + len(t) for f, k, t in zip(filled, tasks, tgt))
        positions = len(segments) * row  # every row padded to the batch's longest
        layers, head = _layer_params(lm)
        flops = 4 * layers * positions + 6 * head * len(segments) * (A + 1)
        out["receivers"][lm.spec.name] = {"positions": positions, "answer_columns": A + 1, "flops": flops}
        total += flops
    out["flops"] = total
    return out


def measure_pretrain(lms: list[LoadedModel], il: Interlingua, args: BenchArgs, device: torch.device) -> dict:
    """Time ``pretrain_step`` (``args.pretrain``'s batch size and task mix) on ``il`` and ``lms``."""
    a = args.pretrain
    contexts = synthetic_contexts(max(4 * a.batch_size, 64), int(a.max_segment_words * 1.5), args.seed)
    params = il.trainable_parameters()
    opt = make_optimizer(il, a.lr, a.weight_decay, a.head_lr_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)  # the schedule does not change time
    il.train()
    records: list[dict] = []
    reset_peak(device)

    def step() -> None:
        records.append(pretrain_step(lms, il, a, contexts, len(records), params, opt, sched))

    warm: list[float] = []
    times = timed(step, args.warmup, args.iters, device, warm)
    out = {"all": summarize_times(times, a.batch_size, warm)}
    out["all"]["peak_memory_gb"] = peak_gb(device)
    out["record"] = records[-1]  # losses of the last step: finite numbers say the step is real
    # batches differ from step to step (task mix, lengths): the rate is the timed steps' FLOPs over their time
    works = [step_work(lms, il, a, contexts, i) for i in range(args.warmup, args.warmup + args.iters)]
    out["work"] = works[-1]  # the last timed step's, in detail
    out["timed_flops"] = sum(w["flops"] for w in works)
    out["achieved_tflops"] = out["timed_flops"] / sum(times) / 1e12
    if args.profile_steps:
        out["profile"] = profile_step(step, args.profile_steps, device)
    out["trainable_parameters"] = sum(p.numel() for p in params)
    return out
