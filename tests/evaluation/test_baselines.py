"""Text-side baselines: names, token-budget prompt facts, and what reaches the prompt maker."""

import dataclasses

import pytest
import torch

from latentwire.batching import embed_ids
from latentwire.evaluation.baselines import parse_baseline, text_prompt_maker
from latentwire.evaluation.evaluate import EvalArgs, evaluate
from latentwire.prompt import PromptArgs, build_prompt, content_text
from latentwire.scaffold_cache import scaffold_cache_off


@pytest.fixture(autouse=True)
def whole_prompts():
    """These tests read whole prompt embeddings: the scaffold cache stays off (test_scaffold_cache)."""
    with scaffold_cache_off():
        yield


VIEW = {
    "question": "Who won Super Bowl 50?",
    "context": "Denver Broncos defeated the Carolina Panthers 24 to 10 at Levi's Stadium in Santa Clara, California.",
}


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("text", ("text", None)),
        ("closed", ("closed", None)),
        ("budget-8", ("budget", 8)),
        ("budget-128", ("budget", 128)),
        ("tail-48", ("tail", 48)),
        ("lexical-16", ("lexical", 16)),
        ("selfinfo-32", ("selfinfo", 32)),
        ("oracle-48", ("oracle", 48)),
        ("select-text-48", ("select-text", 48)),
    ],
)
def test_parse_baseline(name, parsed):
    assert parse_baseline(name) == parsed


@pytest.mark.parametrize(
    "name", ["budget", "budget-", "budget-8x", "Text", "latent", "budget--8", " text", "tail-0", "text-8"]
)
def test_parse_baseline_rejects_other_names(name):
    with pytest.raises(ValueError, match="expected text, closed, or budget"):
        parse_baseline(name)


def _facts(lm, name: str, args: PromptArgs | None = None):
    made = text_prompt_maker(lm, args or PromptArgs(), name)([VIEW])
    embeds, facts = made.embeds, made.facts
    return embeds[0], facts[0]


def test_text_prompt_facts(tiny_lm):
    args = PromptArgs()
    emb, text = _facts(tiny_lm, "text", args)
    ids = build_prompt(VIEW, tiny_lm.tokenizer, args, tiny_lm.uses_chat_template, "text").ids
    assert torch.equal(emb, embed_ids(tiny_lm.model, ids, tiny_lm.device))  # (T, d)
    assert text["prompt_tokens"] == len(ids)
    assert text["content_positions"] == text["text_content_tokens"]
    assert text["payload_bytes"] == text["text_bytes"] == len(content_text(VIEW, args).encode("utf-8"))


def test_budget_prompt_keeps_m_content_tokens(tiny_lm):
    _, text = _facts(tiny_lm, "text")
    M = 8
    assert text["text_content_tokens"] > M  # the content is longer than the budget
    emb, budget = _facts(tiny_lm, f"budget-{M}")
    assert budget["content_positions"] == M
    assert budget["text_content_tokens"] == text["text_content_tokens"]
    assert budget["prompt_tokens"] == text["prompt_tokens"] - text["text_content_tokens"] + M
    assert emb.shape[0] == budget["prompt_tokens"]
    assert 0 < budget["payload_bytes"] < budget["text_bytes"] == text["text_bytes"]


def test_budget_larger_than_content_is_the_text_prompt(tiny_lm):
    emb_text, text = _facts(tiny_lm, "text")
    emb, big = _facts(tiny_lm, "budget-1000")
    assert big["content_positions"] == text["content_positions"]
    assert torch.equal(emb, emb_text)


def test_closed_book_sends_the_question_only(tiny_lm):
    _, text = _facts(tiny_lm, "text")
    _, closed = _facts(tiny_lm, "closed")
    question_only = content_text(VIEW, PromptArgs(), "closed")
    assert closed["payload_bytes"] == len(question_only.encode("utf-8")) < text["payload_bytes"]
    assert closed["content_positions"] < text["content_positions"]


def test_prompt_over_the_context_limit_is_an_error(tiny_lm):
    _, budget = _facts(tiny_lm, "budget-8")
    _, text = _facts(tiny_lm, "text")
    limit = budget["prompt_tokens"]  # the budget prompt fits exactly, the text prompt does not
    assert text["prompt_tokens"] > limit
    small = dataclasses.replace(tiny_lm, spec=dataclasses.replace(tiny_lm.spec, context_limit=limit))
    with pytest.raises(
        ValueError, match=rf"prompt of {text['prompt_tokens']} tokens exceeds context_limit {limit}"
    ):
        text_prompt_maker(small, PromptArgs(), "text")([VIEW])
    text_prompt_maker(small, PromptArgs(), "budget-8")([VIEW])


def test_evaluate_passes_only_question_and_context_to_the_prompt_maker(tiny_lm):
    examples = [
        {
            "id": f"q{i}",
            "title": "Super_Bowl_50",
            "answers": ["Denver Broncos", "Broncos"],
            "answer_starts": [0, 7],
            **VIEW,
        }
        for i in range(3)
    ]
    args = PromptArgs()
    inner = text_prompt_maker(tiny_lm, args, "budget-8")
    seen: list[list[dict]] = []

    def spy(views):
        for v in views:
            assert set(v) == {"question", "context"}, f"prompt maker saw {sorted(v)}"
        seen.append(views)
        return inner(views)

    rows, summary = evaluate(
        tiny_lm, examples, spy, args, EvalArgs(batch_size=2, max_new_tokens=2, device="cpu")
    )
    assert [len(v) for v in seen] == [2, 1]
    assert all(v == VIEW for batch in seen for v in batch)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert all(r["content_positions"] == 8 for r in rows)  # the maker's facts reach the rows
    assert summary["n"] == 3 and summary["content_positions"] == 8
