"""Teacher-forced answer scoring: padding invariance, the HF loss (no double shift), ranks."""

import pytest
import torch
import torch.nn.functional as F

from latentwire.batching import collate, embed_ids
from latentwire.scoring import answer_logits, answer_nll, first_token_ranks, token_logprobs

PROMPTS = [
    "Question: What is the capital of France? Context: Paris is the capital and largest city of France.",
    "Super Bowl 50",
    "The quick brown fox jumps over the lazy dog. Denver Broncos defeated the Carolina Panthers.",
]
ANSWERS = ["Paris", "Denver Broncos 24 to 10", "the lazy dog"]


def _ids(lm, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def _example(lm, i: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids ending in eos) of example ``i``."""
    return _ids(lm, PROMPTS[i]), _ids(lm, " " + ANSWERS[i]) + [lm.tokenizer.eos_token_id]


def _score(lm, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    prompts, answers = zip(*(_example(lm, i) for i in idx))
    batch = collate(lm.model, [embed_ids(lm.model, p, lm.device) for p in prompts], list(answers))
    return answer_logits(lm.model, batch), batch.answer_ids


def test_examples_differ_in_prompt_and_answer_length(tiny_lm):
    lengths = [tuple(map(len, _example(tiny_lm, i))) for i in range(3)]
    assert len({p for p, _ in lengths}) == 3 and len({a for _, a in lengths}) == 3


def test_answer_logits_shape_and_dtype(tiny_lm):
    logits, gold = _score(tiny_lm, [0, 1])
    assert logits.shape == (2, gold.shape[1], tiny_lm.model.config.vocab_size)
    assert logits.dtype == torch.float32


def test_left_padding_invariance(tiny_lm):
    """Scoring an example alone equals scoring it in a batch with longer and shorter prompts."""
    batch_logits, batch_gold = _score(tiny_lm, [0, 1, 2])
    for row in range(3):
        alone, gold = _score(tiny_lm, [row])
        A = gold.shape[1]
        assert torch.equal(batch_gold[row, :A], gold[0])
        assert (batch_gold[row, A:] == -100).all()
        torch.testing.assert_close(batch_logits[row, :A], alone[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            answer_nll(batch_logits[row : row + 1], batch_gold[row : row + 1]),
            answer_nll(alone, gold),
            atol=1e-5,
            rtol=1e-5,
        )


def test_nll_equals_hf_loss_with_unshifted_labels(tiny_lm):
    """The check that catches double shifting: HF shifts labels itself, so it gets them UNSHIFTED."""
    prompt, answer = _example(tiny_lm, 0)
    logits, gold = _score(tiny_lm, [0])
    nll = answer_nll(logits, gold)  # (1,)
    input_ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    hf = tiny_lm.model(input_ids=input_ids, labels=labels).loss
    torch.testing.assert_close(nll[0], hf, atol=1e-5, rtol=1e-5)
    # A pre-shifted label sequence (the historical bug) scores something else entirely.
    shifted = torch.cat([labels[:, 1:], torch.tensor([[-100]])], dim=1)
    double = tiny_lm.model(input_ids=input_ids, labels=shifted).loss
    assert abs(double.item() - nll.item()) > 1e-2


def test_nll_equals_manual_per_position_cross_entropy(tiny_lm):
    prompt, answer = _example(tiny_lm, 1)
    full = tiny_lm.model(input_ids=torch.tensor([prompt + answer])).logits[0]  # (T, V)
    # The logit at column len(prompt) - 1 + j predicts answer token j.
    rows = full[len(prompt) - 1 : len(prompt) - 1 + len(answer)]
    manual = F.cross_entropy(rows, torch.tensor(answer), reduction="none")  # (A,)
    logits, gold = _score(tiny_lm, [1])
    torch.testing.assert_close(-token_logprobs(logits, gold)[0], manual, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(answer_nll(logits, gold)[0], manual.mean(), atol=1e-5, rtol=1e-5)


def test_answer_logits_needs_answers(tiny_lm):
    batch = collate(tiny_lm.model, [embed_ids(tiny_lm.model, [1, 2], tiny_lm.device)])
    with pytest.raises(ValueError, match="needs a batch built with answers"):
        answer_logits(tiny_lm.model, batch)


# --- hand-made logits ------------------------------------------------------------------------


def test_token_logprobs_and_nll_ignore_padding():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [1 / 3] * 3]]))
    gold = torch.tensor([[0, 1], [2, -100]])
    lp = token_logprobs(logits, gold)
    expected = torch.log(torch.tensor([[0.5, 0.8], [0.6, 1.0]]))  # log 1 = 0 on padding
    torch.testing.assert_close(lp, expected)
    nll = answer_nll(logits, gold)
    torch.testing.assert_close(
        nll, torch.tensor([-(torch.log(torch.tensor(0.4))) / 2, -torch.log(torch.tensor(0.6))])
    )


def test_first_token_ranks_by_hand():
    logits = torch.tensor(
        [
            [[0.1, 3.0, 2.0, -1.0], [9.0, 0.0, 0.0, 0.0]],  # gold 1 is the top logit -> rank 0
            [[0.1, 3.0, 2.0, -1.0], [0.0, 0.0, 0.0, 9.0]],  # gold 2 is second -> rank 1
            [[0.1, 3.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]],  # gold 3 is last -> rank 3
            [[5.0, 5.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]],  # ties with the gold do not count against it
        ]
    )
    gold = torch.tensor([[1, 0], [2, 3], [3, -100], [1, -100]])
    assert first_token_ranks(logits, gold).tolist() == [0, 1, 3, 0]
