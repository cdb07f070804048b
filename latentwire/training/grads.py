"""Gradient mechanics of latent training other than the losses themselves.

- :func:`micro_batches`: split one optimisation step's examples for gradient accumulation.
- :func:`part_grads` / :func:`grad_norms`: the gradient of each loss part on its own, w.r.t. the
  trainable parameters, for diagnostics (which loss pulls how hard). Computed with
  ``torch.autograd.grad(..., retain_graph=True)``, which returns gradients without touching
  ``.grad``, so the update that follows is bit-identical with or without them.
- :func:`checkpointed_receivers`: activation checkpointing of the frozen receivers for one step.

Training routes gradients through a detached Z leaf (see :mod:`latentwire.training.step`): a receiver's
loss reaches its adapter (and LoRA) parameters directly and the encoder's only through ``z_leaf``;
:func:`part_grads` follows both paths, so a part's gradient is the one ``backward`` would produce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from latentwire.models import LoadedModel


def micro_batches(batch: list, n: int) -> list[list]:
    """``batch`` cut into ``n`` consecutive micro-batches of (nearly) equal size, none empty."""
    if not 1 <= n <= len(batch):
        raise ValueError(f"cannot split {len(batch)} examples into {n} micro-batches")
    size, extra = divmod(len(batch), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(batch[start:end])
        start = end
    return out


def part_grads(
    parts: dict[str, torch.Tensor],
    z: torch.Tensor,
    z_leaf: torch.Tensor,
    params: list[torch.nn.Parameter],
    scale: float = 1.0,
) -> dict[str, list[torch.Tensor]]:
    """Gradient of each part w.r.t. ``params``, × ``scale``; one tensor per parameter (zeros if unused).

    ``parts`` are scalar losses whose graph reads ``z_leaf`` (B, M, d_z), the detached copy of the
    encoder output ``z``; both graphs are kept (``retain_graph``) for the step's own backward.
    """
    out = {}
    for name, part in parts.items():
        direct = torch.autograd.grad(part, [*params, z_leaf], retain_graph=True, allow_unused=True)
        grads = list(direct[:-1])
        if direct[-1] is not None:  # continue through the encoder: d part / d z = d part / d z_leaf
            via_z = torch.autograd.grad(z, params, direct[-1], retain_graph=True, allow_unused=True)
            grads = [_add(a, b) for a, b in zip(grads, via_z)]
        out[name] = [
            (g * scale if g is not None else torch.zeros_like(p)).detach() for g, p in zip(grads, params)
        ]
    return out


def add_part_grads(acc: dict[str, list[torch.Tensor]], new: dict[str, list[torch.Tensor]]) -> None:
    """Accumulate ``new`` into ``acc`` in place (micro-batches of one step)."""
    for name, grads in new.items():
        acc[name] = [a + g for a, g in zip(acc[name], grads)] if name in acc else grads


def grad_norms(grads: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Global L2 norm of each part's gradient (over all parameters)."""
    return {
        name: float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs])))
        for name, gs in grads.items()
    }


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


@contextlib.contextmanager
def checkpointed_receivers(lms: list[LoadedModel], enabled: bool = True) -> Iterator[None]:
    """Activation checkpointing of every receiver's decoder layers inside the block, then undone.

    transformers checkpoints a layer only while that layer is in training mode, but a frozen receiver
    stays in eval mode (dropout off). So only the checkpointed layer modules themselves are flagged
    as training, not their children: attention and MLP dropout stay off and the forward is the eval
    forward. Non-reentrant checkpointing gives gradients to ``inputs_embeds`` (the soft tokens) with
    every weight frozen. transformers drops ``past_key_values`` in a checkpointed layer (the cache
    would be written twice), so a forward with a KV prefix is refused here instead of silently
    losing its prefix.
    """
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    undo = []
    try:
        for lm in lms:
            m = lm.model
            hooked = hasattr(m, "_require_grads_hook")
            # transformers >= 5 renamed it; the old name is a deprecated alias until v6
            enable = getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable
            enable({"use_reentrant": False})
            if not hooked and hasattr(m, "_require_grads_hook"):
                m.disable_input_require_grads()  # our inputs are embeddings that already need grads
            layers = [x for x in m.modules() if isinstance(x, GradientCheckpointingLayer)]
            modes = [x.training for x in layers]
            for x in layers:
                x.training = True  # this module only: its children stay in eval mode
            hook = m.register_forward_pre_hook(_refuse_kv_prefix, with_kwargs=True)
            undo.append((m, layers, modes, hook))
        yield
    finally:
        for m, layers, modes, hook in undo:
            hook.remove()
            for x, mode in zip(layers, modes):
                x.training = mode
            disable = getattr(m, "activation_checkpointing_disable", None) or m.gradient_checkpointing_disable
            disable()


def _refuse_kv_prefix(module, args, kwargs):
    if kwargs.get("past_key_values") is not None:
        raise ValueError("train.grad_checkpointing cannot be combined with a KV prefix (deep prefix)")
