"""Batch layout: left-padded prompts, right-padded answers, positions that skip padding."""

import pytest
import torch

from latentwire.batching import collate, embed_ids, pad_answers


def _prompt(lm, n: int) -> torch.Tensor:
    """Embeddings of ``n`` distinct token ids. Returns (n, d)."""
    return embed_ids(lm.model, list(range(10, 10 + n)), lm.device)


def test_embed_ids_is_the_models_embedding_lookup(tiny_lm):
    ids = [5, 17, 5, 200]
    out = embed_ids(tiny_lm.model, ids, tiny_lm.device)
    weight = tiny_lm.model.get_input_embeddings().weight
    assert out.shape == (4, weight.shape[1])
    assert torch.equal(out, weight[ids])


def test_collate_layout_with_answers(tiny_lm):
    model = tiny_lm.model
    prompts = [_prompt(tiny_lm, 3), _prompt(tiny_lm, 5)]
    answers = [[7, 8, 9, 2], [4]]
    b = collate(model, prompts, answers)
    T_p, A, d = 5, 4, prompts[0].shape[1]
    assert b.prompt_len == T_p
    assert b.inputs_embeds.shape == (2, T_p + A, d)
    assert b.attention_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0, 0]]
    # Positions count real tokens only: the left-padded row starts at 0 where its prompt starts.
    assert b.position_ids[0, 2:].tolist() == list(range(7))
    assert b.position_ids[1, :6].tolist() == list(range(6))
    assert b.answer_ids.tolist() == [[7, 8, 9, 2], [4, -100, -100, -100]]
    # Prompts end at column T_p for every row; answers start there.
    assert torch.equal(b.inputs_embeds[0, 2:5], prompts[0])
    assert torch.equal(b.inputs_embeds[1, :5], prompts[1])
    assert torch.equal(b.inputs_embeds[0, 5:9], embed_ids(model, [7, 8, 9, 2], tiny_lm.device))
    assert torch.equal(b.inputs_embeds[1, 5], embed_ids(model, [4], tiny_lm.device)[0])
    assert not b.inputs_embeds[0, :2].any() and not b.inputs_embeds[1, 6:].any()  # padding is zero


def test_collate_prompt_only(tiny_lm):
    b = collate(tiny_lm.model, [_prompt(tiny_lm, 2), _prompt(tiny_lm, 4)])
    assert b.answer_ids is None
    assert b.prompt_len == 4 and b.inputs_embeds.shape[1] == 4
    assert b.attention_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert b.position_ids[0, 2:].tolist() == [0, 1]


def test_pad_answers():
    out = pad_answers([[3], [5, 6, 7]], torch.device("cpu"))
    assert out.dtype == torch.long
    assert out.tolist() == [[3, -100, -100], [5, 6, 7]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_collate_keeps_prompt_dtype(tiny_lm, dtype):
    b = collate(tiny_lm.model, [_prompt(tiny_lm, 2).to(dtype)], [[1, 2]])
    assert b.inputs_embeds.dtype == dtype


def test_collate_passes_each_prompts_gradient_through(tiny_lm):
    """Training backpropagates through collate into the soft tokens: each prompt receives exactly
    the gradient of its own columns."""
    prompts = [_prompt(tiny_lm, n).detach().requires_grad_(True) for n in (3, 5)]
    b = collate(tiny_lm.model, prompts, [[7, 8], [4]])
    g = torch.randn_like(b.inputs_embeds)  # (2, 5 + 2, d)
    grads = torch.autograd.grad(b.inputs_embeds, prompts, g)
    assert torch.equal(grads[0], g[0, 2:5]) and torch.equal(grads[1], g[1, :5])
