"""Discrete comparators: which content tokens each keeps, in the receiver's tokens, through the prompt contract."""

import pytest
import torch

from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.comparators import (
    content_offsets,
    content_surprisal,
    keep_lexical,
    keep_oracle,
    keep_selfinfo,
    keep_tail,
    packed_id_bytes,
    select_text_ids,
)
from latentwire.prompt import PromptArgs, build_prompt, content_text
from latentwire.scaffold_cache import scaffold_cache_off


@pytest.fixture(autouse=True)
def whole_prompts():
    """These tests read whole prompt embeddings: the scaffold cache stays off (test_scaffold_cache)."""
    with scaffold_cache_off():
        yield


VIEW = {
    "question": "Which team won the title?",
    "context": (
        "The weather in spring was mild and the season started late. Many fans travelled far. "
        "In the final match the Denver team won the title after a long game in the rain. "
        "Afterwards the city held a parade and the mayor gave a speech to a large crowd."
    ),
}
ANSWER = "Denver team"


def _content(lm, args=None):
    text = content_text(VIEW, args or PromptArgs())
    ids, offsets = content_offsets(lm.tokenizer, text)
    return text, ids, offsets


def test_content_offsets_are_the_prompt_content_ids(tiny_lm):
    args = PromptArgs()
    _, ids, offsets = _content(tiny_lm, args)
    assert ids == build_prompt(VIEW, tiny_lm.tokenizer, args, tiny_lm.uses_chat_template).content
    assert len(offsets) == len(ids)


def test_tail_keeps_the_last_m():
    assert keep_tail(10, 4) == [6, 7, 8, 9]
    assert keep_tail(3, 4) == [0, 1, 2]


def test_lexical_window_holds_the_question_words(tiny_lm):
    text, ids, offsets = _content(tiny_lm)
    M = 24
    kept = keep_lexical(text, offsets, M)
    assert len(kept) == M and kept == sorted(kept)
    n_head = next(i for i, j in enumerate(kept) if j != i)  # the head, then a jump to the window
    assert text[: offsets[kept[n_head - 1]][1]].startswith("Question")  # the head is kept
    window = text[offsets[kept[n_head]][0] : offsets[kept[-1]][1]]
    assert "team won" in window  # the densest stretch of question words ("team", "won", "title")
    assert "team won" not in text[: offsets[M - 1][1]].split("Context:")[1]  # not where budget-M looks


CONTEXT_ONLY = {
    "replaces": "context",
    "content_template": "Context: {context}",
    "user_template": "{content}\n\nQuestion: {question}\nAnswer:",
}


def test_lexical_reads_the_question_shown_outside_the_content(tiny_lm):
    """prompt.replaces: context: the content holds no question, so the window's overlap is counted
    against the example's question (before the fix it fell back to budget-M's first window)."""
    args = PromptArgs(**CONTEXT_ONLY)
    text, ids, offsets = _content(tiny_lm, args)
    M = 16
    assert keep_lexical(text, offsets, M) == list(range(M))  # without the question: budget-M
    kept = keep_lexical(text, offsets, M, question=VIEW["question"])
    assert len(kept) == M and kept == list(range(kept[0], kept[0] + M))  # one window, no head
    assert "team won" in text[offsets[kept[0]][0] : offsets[kept[-1]][1]]
    made = text_prompt_maker(tiny_lm, args, f"lexical-{M}")([VIEW])
    budget = text_prompt_maker(tiny_lm, args, f"budget-{M}")([VIEW])
    assert made.facts[0]["content_positions"] == budget.facts[0]["content_positions"] == M
    assert not torch.equal(made.embeds[0], budget.embeds[0])


def test_oracle_window_contains_the_answer(tiny_lm):
    text, ids, offsets = _content(tiny_lm)
    kept = keep_oracle(text, offsets, [ANSWER], 16)
    kept_text = "".join(text[offsets[j][0] : offsets[j][1]] for j in kept)
    assert "Denver" in kept_text
    # not found: falls back to the first window after the head (never raises)
    assert len(keep_oracle(text, offsets, ["not in the text"], 16)) == 16


def test_selfinfo_keeps_highest_surprisal_in_order():
    assert keep_selfinfo([0.1, 5.0, 0.2, 3.0, 4.0], 3) == [1, 3, 4]
    assert keep_selfinfo([1.0, 1.0, 1.0], 2) == [0, 1]  # ties: the earlier token


def test_content_surprisal_matches_a_manual_forward(tiny_lm):
    prefix = build_prompt(VIEW, tiny_lm.tokenizer, PromptArgs(), tiny_lm.uses_chat_template).prefix
    _, ids, _ = _content(tiny_lm)
    s = content_surprisal(tiny_lm.model, prefix, ids[:6])
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=torch.tensor([prefix + ids[:6]])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    manual = [-float(logp[len(prefix) + j - 1, ids[j]]) for j in range(6)]
    assert s == pytest.approx(manual, abs=1e-4)


def test_packed_id_bytes():
    assert packed_id_bytes(48, 151_665) == 48 * 18 // 8  # 18 bits per id
    assert packed_id_bytes(1, 256) == 1


@pytest.mark.parametrize("kind", ["tail", "lexical", "selfinfo", "oracle"])
def test_comparator_prompts_keep_m_positions_between_the_scaffold(tiny_lm, kind):
    args, M = PromptArgs(), 12
    full = build_prompt(VIEW, tiny_lm.tokenizer, args, tiny_lm.uses_chat_template)
    gold = {content_text(VIEW, args): [ANSWER]}
    made = text_prompt_maker(tiny_lm, args, f"{kind}-{M}", gold=gold)([VIEW])
    embeds, facts = made.embeds, made.facts
    assert facts[0]["content_positions"] == M
    assert facts[0]["prompt_tokens"] == len(full.prefix) + M + len(full.suffix)
    assert facts[0]["payload_id_bytes"] == packed_id_bytes(M, len(tiny_lm.tokenizer))
    assert embeds[0].shape[0] == facts[0]["prompt_tokens"]  # (T, d)


def test_oracle_needs_gold_and_select_text_needs_windows(tiny_lm):
    with pytest.raises(ValueError, match="gold"):
        text_prompt_maker(tiny_lm, PromptArgs(), "oracle-8")
    with pytest.raises(ValueError, match="windows"):
        text_prompt_maker(tiny_lm, PromptArgs(), "select-text-8")


def test_select_text_same_tokenizer_uses_the_kept_ids(tiny_lm):
    text, ids, offsets = _content(tiny_lm)
    kept = [0, 1, 2, 10, 11, 12, 13]
    rec = {
        "text": text,
        "ids": [ids[j] for j in kept],
        "spans": [list(offsets[j]) for j in kept],
        "n_head": 3,
    }
    rec["source_model"] = tiny_lm.spec.name
    assert select_text_ids(rec, tiny_lm.tokenizer, 48, same_tokenizer=True) == rec["ids"]
    # another receiver: re-tokenized from the text spans and cut to M positions
    other = select_text_ids(rec, tiny_lm.tokenizer, 5, same_tokenizer=False)
    assert len(other) <= 5
    facts = text_prompt_maker(tiny_lm, PromptArgs(), "select-text-48", windows={text: rec})([VIEW]).facts
    assert facts[0]["content_positions"] == len(kept)


@pytest.mark.parametrize("name", ["text", "budget-12", "tail-12", "lexical-12", "selfinfo-12"])
def test_generation_does_not_depend_on_the_gold_answers(tiny_lm, name):
    """No leakage by construction: the same examples with other gold answers give the same model
    inputs, the same generations and first tokens (only the gold-scoring NLL may change)."""
    from latentwire.evaluation.evaluate import EvalArgs, evaluate

    args = PromptArgs()
    ex = [
        {"id": "a", "title": "t", **VIEW, "answers": [ANSWER]},
        {"id": "b", "title": "t", **VIEW, "answers": ["rain"]},
    ]
    other = [{**e, "answers": ["something else entirely"]} for e in ex]
    ev = EvalArgs(n_examples=0, batch_size=2, max_new_tokens=5, device="cpu")
    maker = text_prompt_maker(tiny_lm, args, name)
    rows_a, _ = evaluate(tiny_lm, ex, maker, args, ev)
    rows_b, _ = evaluate(tiny_lm, other, maker, args, ev)
    for a, b in zip(rows_a, rows_b):
        assert (a["raw"], a["prediction"], a["first_token"], a["prompt_tokens"]) == (
            b["raw"],
            b["prediction"],
            b["first_token"],
            b["prompt_tokens"],
        )
