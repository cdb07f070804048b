"""The optimizer of an interlingua's trainable tensors, in two learning-rate groups.

The encoder trains at the base learning rate and every reading head (adapters / projectors, deep
prefix, coprocessor, markers, receiver LoRA) at ``lr × head_lr_scale``. ARC-Encoder trains its
projector at 5× (pretraining) to 15× (fine-tuning) the rate of its fully fine-tuned encoder: a fresh
projector learns slowly at the rate that keeps a pretrained trunk intact. The schedule
(``LambdaLR``) scales both groups alike, so the ratio holds at every step.
"""

from __future__ import annotations

import torch
from torch import nn


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
