"""The optimizer of an interlingua's trainable tensors, in two learning-rate groups, and its schedule.

The encoder trains at the base learning rate and every reading head (adapters / projectors, deep
prefix, coprocessor, markers, receiver LoRA) at ``lr × head_lr_scale``. ARC-Encoder trains its
projector at 5× (pretraining) to 15× (fine-tuning) the rate of its fully fine-tuned encoder: a fresh
projector learns slowly at the rate that keeps a pretrained trunk intact. The schedule
(``LambdaLR``) scales both groups alike, so the ratio holds at every step: a linear warm-up, then a
cosine decay to 0.1 × the rate (:func:`lr_schedule`, latent training and the tuned text ceilings).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from latentwire.training.args import TrainArgs


def param_groups(il: nn.Module, lr: float, head_lr_scale: float = 1.0) -> list[dict]:
    """``il.trainable_parameters()`` split into the encoder's group (``lr``) and the heads' group
    (``lr × head_lr_scale``); an empty group is left out."""
    encoder = {id(p) for p in il.encoder.parameters()}
    params = il.trainable_parameters()
    groups = [
        {"name": "encoder", "params": [p for p in params if id(p) in encoder], "lr": lr},
        {"name": "heads", "params": [p for p in params if id(p) not in encoder], "lr": lr * head_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(il: nn.Module, lr: float, weight_decay: float, head_lr_scale: float = 1.0):
    """AdamW over :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(il, lr, head_lr_scale), lr=lr, weight_decay=weight_decay)


def lr_schedule(args: TrainArgs):
    """``LambdaLR`` factor at each step: linear warm-up over ``warmup_steps``, then cosine to 0.1."""

    def f(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(args.steps - args.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def continues_schedule(t: TrainArgs):
    """(steps of a checkpoint's run, steps done) -> whether ``t`` continues that run's schedule."""

    def same(saved_steps: int, done: int) -> bool:
        old, new = lr_schedule(replace(t, steps=saved_steps)), lr_schedule(t)
        return done <= t.steps and all(old(s) == new(s) for s in range(done))

    return same
