"""Evaluation: example selection, what a model may see, row wiring and the summary metrics."""

import pandas as pd
import pytest
import torch

from latentwire.batching import collate
from latentwire.config import ConfigError, from_dict
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view, select_examples, summarize
from latentwire.evaluation.metrics import postprocess_answer
from latentwire.prompt import PromptArgs, answer_ids, eos_id
from latentwire.scaffold_cache import scaffold_cache_off
from latentwire.scoring import answer_logits, answer_nll, first_token_ranks


def test_model_view_keeps_question_and_context_only():
    ex = {"id": "a", "question": "q?", "context": "c.", "answers": ["x"], "title": "T"}
    assert model_view(ex) == {"question": "q?", "context": "c."}


def _frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "question": ["q"] * n,
            "context": ["c"] * n,
            "answers": [[f"a{i}", 7] for i in range(n)],
        }
    )


def test_select_examples_is_a_seeded_subset():
    df = _frame()
    first = [r["id"] for r in select_examples(df, EvalArgs(n_examples=3, seed=0))]
    assert first == [r["id"] for r in select_examples(df, EvalArgs(n_examples=3, seed=0))]
    assert first == df.sample(frac=1.0, random_state=0).head(3)["id"].tolist()
    assert len(set(first)) == 3
    others = {tuple(r["id"] for r in select_examples(df, EvalArgs(n_examples=6, seed=s))) for s in range(5)}
    assert len(others) > 1  # the seed changes the order


def test_select_all_keeps_file_order_and_stringifies_answers():
    rows = select_examples(_frame(), EvalArgs(n_examples=0))
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]
    assert rows[2]["answers"] == ["a2", "7"]


def test_eval_args_validate():
    with pytest.raises(ConfigError, match="^eval: batch_size and max_new_tokens must be >= 1"):
        from_dict(EvalArgs, {"max_new_tokens": 0}, where="eval")
    with pytest.raises(ConfigError, match="^eval: "):
        from_dict(EvalArgs, {"n_examples": -1}, where="eval")


def _row(pred, em, f1, rank, first, prefill, decode, **extra):
    return {
        "prediction": pred,
        "em": em,
        "f1": f1,
        "nll_per_token": 2.0,
        "first_token_rank": rank,
        "first_token": first,
        "prefill_s": prefill,
        "decode_s_per_token": decode,
        "batch_size": 2,
        **extra,
    }


def test_summarize_by_hand():
    facts = {"content_positions": 8, "text_content_tokens": 40, "prompt_tokens": 50}
    rows = [
        _row("a", 1.0, 1.0, 0, 5, 0.010, 0.001, **facts),
        _row("a", 0.0, 0.5, 3, 5, 0.010, 0.001, **facts),  # same batch as row 0: same timings
        _row("b", 0.0, 0.0, 9, 6, 0.030, 0.003, **facts),
    ]
    s = summarize(rows)
    assert s["n"] == 3
    assert s["em"] == pytest.approx(1 / 3) and s["f1"] == pytest.approx(0.5)
    assert s["first_token_top1"] == pytest.approx(1 / 3) and s["first_token_top5"] == pytest.approx(2 / 3)
    assert s["compression"] == 5.0 and s["content_positions"] == 8
    # Timings are summarised over the two batches, not the three rows.
    assert s["prefill_ms"]["median"] == pytest.approx(20.0) and s["prefill_ms"]["mean"] == pytest.approx(20.0)
    assert s["decode_ms_per_token"]["median"] == pytest.approx(2.0)
    assert s["unique_predictions"] == 2 and s["unique_prediction_ratio"] == pytest.approx(2 / 3)
    assert s["unique_first_tokens"] == 2 and s["batch_size"] == 2
    assert "model" not in s  # only with a loaded model


def test_evaluate_rows_match_direct_scoring(tiny_lm):
    """One example through evaluate() (its scaffold from the receiver's cache) equals the whole
    prompt + collate + answer_logits by hand."""
    ex = {
        "id": "q0",
        "question": "Who won Super Bowl 50?",
        "context": "Denver Broncos defeated the Carolina Panthers 24 to 10.",
        "answers": ["Denver Broncos", "Broncos"],
    }
    args = PromptArgs()
    maker = text_prompt_maker(tiny_lm, args, "text")
    rows, summary = evaluate(
        tiny_lm, [ex], maker, args, EvalArgs(batch_size=1, max_new_tokens=4, device="cpu")
    )
    (row,) = rows
    eos = eos_id(tiny_lm.tokenizer)
    gold = answer_ids(ex["answers"][0], tiny_lm.tokenizer, args, tiny_lm.uses_chat_template, eos)
    assert gold[-1] == eos  # answers are supervised up to and including the end token
    with scaffold_cache_off():
        made = maker([model_view(ex)])
        prompts, prefix = made.embeds, made.prefix
    assert prefix is None
    batch = collate(tiny_lm.model, prompts, [gold])
    logits = answer_logits(tiny_lm.model, batch)
    assert row["nll_per_token"] == pytest.approx(answer_nll(logits, batch.answer_ids).item(), abs=1e-5)
    assert row["first_token_rank"] == first_token_ranks(logits, batch.answer_ids).item()
    assert row["prediction"] == postprocess_answer(row["raw"])
    assert row["gen_tokens"] <= 4 and row["batch_size"] == 1
    assert summary["model"] == tiny_lm.spec.name and summary["dtype"] == "float32"
    assert summary["device"] == "cpu" and summary["n"] == 1
    assert torch.isfinite(torch.tensor(summary["nll_per_token"]))


def test_summarize_flags_collapse_only_when_predictions_are_one_answer():
    from latentwire.evaluation.evaluate import summarize

    def rows(preds):
        return [
            {
                "prediction": p,
                "first_token": 1,
                "em": 0.0,
                "f1": 0.0,
                "nll_per_token": 1.0,
                "first_token_rank": 0,
                "prefill_s": 0.1,
                "decode_s_per_token": 0.01,
                "batch_size": 1,
            }
            for p in preds
        ]

    assert summarize(rows(["same"] * 20))["collapsed"] is True
    assert summarize(rows([f"a{i}" for i in range(20)]))["collapsed"] is False
    assert summarize(rows(["same"] * 3))["collapsed"] is False  # too few to judge


def test_cache_scoring_is_checked_and_replaced_when_it_disagrees(tiny_lm, monkeypatch):
    """If scoring through the prefill cache disagrees with the full forward (seen on one CUDA
    setup), evaluate() detects it on the first batch and scores with the full forward."""
    import latentwire.evaluation.evaluate as ev
    from latentwire.generation import generate_and_score

    exs = [
        {
            "id": f"q{i}",
            "question": f"Who won game {i}?",
            "context": "Denver Broncos won 24 to 10.",
            "answers": ["Denver Broncos"],
        }
        for i in range(4)
    ]
    args, eargs = PromptArgs(), EvalArgs(batch_size=2, max_new_tokens=3, device="cpu")
    maker = text_prompt_maker(tiny_lm, args, "text")
    good_rows, good = evaluate(tiny_lm, exs, maker, args, eargs)
    assert good["scoring"]["method"] == "prefill-cache"
    assert good["scoring"]["check_max_abs_nll_diff"] < 1e-3

    def broken(*a, **k):
        gen = generate_and_score(*a, **k)
        if gen.answer_logits is not None:
            gen.answer_logits = gen.answer_logits + 5 * torch.randn_like(gen.answer_logits)
        return gen

    monkeypatch.setattr(ev, "generate_and_score", broken)
    rows, summary = evaluate(tiny_lm, exs, maker, args, eargs)
    assert summary["scoring"]["method"] == "full-forward"
    assert summary["scoring"]["check_max_abs_nll_diff"] > 0.1
    assert [r["nll_per_token"] for r in rows] == pytest.approx(
        [r["nll_per_token"] for r in good_rows], abs=1e-5
    )


def _varied_examples(n: int) -> list[dict]:
    """Examples of very different prompt lengths, in no length order."""
    filler = "The river delta floods every spring and the farmers plant rice afterwards. "
    return [
        {
            "id": f"q{i}",
            "question": f"Who won game {i}?",
            "context": filler * ((7 * i) % 5) + f"Team {i} won 24 to {i}.",
            "answers": [f"Team {i}"],
        }
        for i in range(n)
    ]


def test_length_order_is_longest_first_and_stable():
    from latentwire.evaluation.evaluate import length_order

    exs = [{"question": "q", "context": "c" * n} for n in (3, 9, 3, 1, 9)]
    assert length_order(exs) == [1, 4, 0, 2, 3]


@pytest.mark.parametrize("baseline", ["text", "budget-8", "closed"])
def test_rows_do_not_depend_on_the_batching(baseline, tiny_lm):
    """Length-sorted batches of any size give each example the row it gets alone (batch 1, no
    padding): the same prediction and first-token rank, NLL to fp32 rounding; rows keep the
    input order."""
    exs = _varied_examples(7)
    args = PromptArgs()
    maker = text_prompt_maker(tiny_lm, args, baseline)
    ev = lambda b: evaluate(tiny_lm, exs, maker, args, EvalArgs(batch_size=b, max_new_tokens=6, device="cpu"))  # noqa: E731
    alone, _ = ev(1)
    for b in (3, 8):
        rows, summary = ev(b)
        assert [r["id"] for r in rows] == [e["id"] for e in exs]
        assert [r["raw"] for r in rows] == [r["raw"] for r in alone]
        assert [r["first_token_rank"] for r in rows] == [r["first_token_rank"] for r in alone]
        assert [r["nll_per_token"] for r in rows] == pytest.approx(
            [r["nll_per_token"] for r in alone], abs=1e-5
        )
        assert summary["scoring"]["method"] == "prefill-cache"
