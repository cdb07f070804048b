"""Prefill-shared generation: cache path == full forward, greedy == argmax loop, eos handling."""

import torch

from latentwire.batching import collate, embed_ids, pad_answers
from latentwire.generation import generate_and_score, stop_at_strings
from latentwire.scoring import answer_logits

PROMPTS = [
    "Question: What is the capital of France? Context: Paris is the capital and largest city of France.",
    "Super Bowl 50",
    "The quick brown fox jumps over the lazy dog. Denver Broncos defeated the Carolina Panthers.",
]
ANSWERS = ["Paris", "Denver Broncos 24 to 10", "the lazy dog"]
NO_EOS = {-1}  # an id no model produces: generation runs the full max_new_tokens


def _ids(lm, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_batch(lm, idx: list[int]):
    return collate(lm.model, [embed_ids(lm.model, _ids(lm, PROMPTS[i]), lm.device) for i in idx])


def _greedy_no_cache(lm, ids: list[int], steps: int) -> tuple[list[int], torch.Tensor]:
    """Reference decoder: recompute the whole sequence at every step, no cache, no padding.

    Returns the greedy tokens and the logits that chose them, (steps, V)."""
    ids, out, logits = list(ids), [], []
    for _ in range(steps):
        last = lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]  # (V,)
        out.append(int(last.argmax()))
        logits.append(last)
        ids.append(out[-1])
    return out, torch.stack(logits)


class _RecordingModel:
    """Calls the model and keeps the last-column logits of every forward, (B, V) each."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.logits = model, []

    def __call__(self, **kwargs):
        out = self.model(**kwargs)
        self.logits.append(out.logits[:, -1].float())
        return out


def test_cached_answer_logits_equal_the_full_forward(tiny_lm):
    """generate_and_score scores gold answers through the prefilled cache; it must match one forward."""
    idx = [0, 1, 2]
    eos = tiny_lm.tokenizer.eos_token_id
    answers = [_ids(tiny_lm, " " + ANSWERS[i]) + [eos] for i in idx]
    gold = pad_answers(answers, tiny_lm.device)  # (B, A)
    gen = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, idx), 2, NO_EOS, gold)
    prompts = [embed_ids(tiny_lm.model, _ids(tiny_lm, PROMPTS[i]), tiny_lm.device) for i in idx]
    full = answer_logits(tiny_lm.model, collate(tiny_lm.model, prompts, answers))  # (B, A, V)
    assert gen.answer_logits.shape == full.shape
    valid = gold != -100  # past an answer's end both paths predict from padding; only real columns count
    torch.testing.assert_close(gen.answer_logits[valid], full[valid], atol=1e-5, rtol=1e-4)


def test_greedy_equals_argmax_loop_without_cache(tiny_lm, family):
    """Every decode step through the cache (left-padded batch) equals a full recomputation alone."""
    steps = 5
    recorder = _RecordingModel(tiny_lm.model)
    gen = generate_and_score(recorder, _prompt_batch(tiny_lm, [0, 1, 2]), steps, NO_EOS)
    assert gen.answer_logits is None
    assert gen.decode_steps == steps - 1 and len(recorder.logits) == steps  # prefill + 4 decode calls
    for i in range(3):
        tokens, logits = _greedy_no_cache(tiny_lm, _ids(tiny_lm, PROMPTS[i]), steps)
        assert gen.tokens[i] == tokens
        # Logits, not just argmaxes: a random tiny model's argmax survives small position/mask errors.
        cached = torch.stack([step[i] for step in recorder.logits])  # (steps, V)
        torch.testing.assert_close(cached, logits, atol=1e-5, rtol=1e-4)
    if family == "qwen2":
        # The tied-embedding tiny Llama greedily repeats its last token; the untied Qwen2 does not.
        assert all(len(set(t)) >= 3 for t in gen.tokens)


def test_left_padding_invariance_of_generation(tiny_lm):
    """An example decodes to the same tokens alone and inside a batch with longer prompts."""
    batch = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [2, 1, 0]), 6, NO_EOS)
    for row, i in enumerate([2, 1, 0]):
        alone = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [i]), 6, NO_EOS)
        assert batch.tokens[row] == alone.tokens[0]


def test_eos_stops_a_row_and_is_stripped(tiny_lm):
    free = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0, 1]), 6, NO_EOS).tokens
    # Use row 0's third token as "eos": row 0 must stop before it; row 1 must go on unless it also hits it.
    stop = free[0][2]
    cut = [t[: t.index(stop)] if stop in t else t for t in free]
    assert len(cut[0]) <= 2
    gen = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0, 1]), 6, {stop})
    assert gen.tokens == cut
    assert all(stop not in t for t in gen.tokens)


def test_all_rows_stopping_ends_decoding_early(tiny_lm):
    first = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0]), 1, NO_EOS)
    assert len(first.tokens[0]) == 1 and first.decode_steps == 0
    gen = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0]), 8, {first.tokens[0][0]})
    assert gen.tokens == [[]]  # the very first token was eos: nothing kept, no decode step run
    assert gen.decode_steps == 0
    assert gen.prefill_s > 0 and gen.decode_s >= 0


def test_stop_rule_ends_a_row_after_the_stopping_token(tiny_lm):
    """A text stop rule (the plain path's newline / next-question rule) is checked inside decoding:
    the row ends right after the token that completes a stop string and no later step runs for it."""
    free = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0, 1]), 6, NO_EOS)
    tok = tiny_lm.tokenizer
    # a stop string that row 0's text reaches at its third token (leading whitespace aside)
    text = tok.decode(free.tokens[0][:3], skip_special_tokens=True).lstrip()
    head = tok.decode(free.tokens[0][:2], skip_special_tokens=True).lstrip()
    target = text[len(head) :] or text
    rule = stop_at_strings(tok, [target])
    gen = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0, 1]), 6, NO_EOS, stop=rule)
    for row, got in zip(free.tokens, gen.tokens):
        n = next((i + 1 for i in range(len(row)) if rule(row[: i + 1])), len(row))
        assert got == row[:n]  # greedy prefix up to and including the stopping token
    assert len(gen.tokens[0]) <= 3
    everything = generate_and_score(
        tiny_lm.model, _prompt_batch(tiny_lm, [0]), 8, NO_EOS, stop=lambda ids: True
    )
    assert everything.tokens == [free.tokens[0][:1]] and everything.decode_steps == 0


def test_a_stopped_row_leaves_the_batch_and_the_others_decode_on(tiny_lm):
    """Once a row stops, later decode steps run on the other rows only (their cache rows selected),
    and those rows still decode exactly as in a batch where nobody stops."""
    steps = 6
    free = generate_and_score(tiny_lm.model, _prompt_batch(tiny_lm, [0, 1, 2]), steps, NO_EOS).tokens
    head, stopped = free[0][:2], []

    def rule(ids: list[int]) -> bool:  # rows are checked in order: this stops row 0 alone
        if not stopped and ids == head:
            stopped.append(True)
            return True
        return False

    recorder = _RecordingModel(tiny_lm.model)
    gen = generate_and_score(recorder, _prompt_batch(tiny_lm, [0, 1, 2]), steps, NO_EOS, stop=rule)
    assert gen.tokens == [head, free[1], free[2]]
    # prefill and the first decode step see 3 rows; every step after row 0's second token sees 2
    assert [len(x) for x in recorder.logits] == [3, 3] + [2] * (steps - 2)
    assert gen.decode_steps == steps - 1


def test_stop_at_strings_skips_leading_whitespace(tiny_lm):
    tok = tiny_lm.tokenizer
    rule = stop_at_strings(tok, ["\n", "Question:"])
    ids = lambda s: list(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert not rule(ids(" Paris"))
    assert not rule(ids("\n\n Paris"))  # a blank line before the answer is not its end
    assert rule(ids(" Paris\n"))
    assert rule(ids(" Paris Question: what"))
    assert stop_at_strings(tok, []) is None
