"""Gradient mechanics: micro-batch splits, per-part gradients through the detached Z leaf, and
activation checkpointing of a frozen receiver (switched on only inside the block)."""

import pytest
import torch
from transformers import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer

from latentwire.training.grads import (
    add_part_grads,
    checkpointed_receivers,
    grad_norms,
    micro_batches,
    part_grads,
)


def test_micro_batches_cover_the_batch_in_order():
    assert micro_batches(list(range(4)), 1) == [[0, 1, 2, 3]]
    assert micro_batches(list(range(4)), 2) == [[0, 1], [2, 3]]
    assert micro_batches(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="3 examples into 4"):
        micro_batches([1, 2, 3], 4)


def test_part_grads_equal_the_gradients_of_the_undetached_graph():
    """encoder -> z -> (detached leaf) -> adapter -> parts: the per-part gradient over all parameters
    equals autograd on the same part computed without the detach, and norms add up as vectors."""
    torch.manual_seed(0)
    enc, ada = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    unused = torch.nn.Parameter(torch.ones(2))  # a trainable parameter no part reads: zero gradient
    params = [*enc.parameters(), *ada.parameters(), unused]
    x = torch.randn(5, 3)

    def parts_of(z):
        y = ada(z)
        return {"a": y.pow(2).mean(), "b": 3 * y[:, 0].sum(), "z": z.abs().mean()}

    z = enc(x)
    z_leaf = z.detach().requires_grad_(True)
    got = part_grads(parts_of(z_leaf), z, z_leaf, params, scale=0.5)
    for name, part in parts_of(enc(x)).items():  # reference: no detach, plain autograd
        want = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
        for g, w, p in zip(got[name], want, params):
            torch.testing.assert_close(g, 0.5 * w if w is not None else torch.zeros_like(p))
    assert not got["a"][-1].any()
    acc: dict = {}
    add_part_grads(acc, got)
    add_part_grads(acc, got)
    flat = torch.cat([g.flatten() for g in got["b"]])
    assert grad_norms(acc)["b"] == pytest.approx(2 * flat.norm().item(), rel=1e-6)


def _flags(lm):
    layers = [m for m in lm.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    return [(m.training, m.gradient_checkpointing) for m in layers]


def test_checkpointing_is_scoped_to_the_block_and_refuses_a_kv_prefix(tiny_lm):
    before = _flags(tiny_lm)
    assert before and not any(t or c for t, c in before)
    embeds = torch.randn(1, 3, tiny_lm.model.config.hidden_size, requires_grad=True)  # (B, T, d)
    with checkpointed_receivers([tiny_lm]):
        assert all(t and c for t, c in _flags(tiny_lm))
        assert not tiny_lm.model.model.training  # only the layer modules themselves
        out = tiny_lm.model(inputs_embeds=embeds, use_cache=False).logits.sum()
        out.backward()  # gradients reach the soft inputs through the frozen, checkpointed layers
        assert embeds.grad is not None and embeds.grad.abs().sum() > 0
        with pytest.raises(ValueError, match="KV prefix"):
            tiny_lm.model(inputs_embeds=embeds, past_key_values=DynamicCache(config=tiny_lm.model.config))
    assert _flags(tiny_lm) == before and not hasattr(tiny_lm.model, "_require_grads_hook")
    with checkpointed_receivers([tiny_lm], enabled=False):
        assert _flags(tiny_lm) == before
