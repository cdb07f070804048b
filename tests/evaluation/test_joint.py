"""Joint rescoring: the summary on hand-made scores, and candidate scores against a manual forward."""

import math

import pytest
import torch

from latentwire.batching import embed_ids
from latentwire.evaluation.joint import candidate_scores, joint_summary
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id

GOLDS = [["Denver Broncos"], ["Paris"], ["Santa Clara, California"], ["1879"]]


def _rows(preds: list[str], f1s: list[float]) -> list[dict]:
    return [
        {"id": f"q{i}", "answers": g, "prediction": p, "f1": f}
        for i, (g, p, f) in enumerate(zip(GOLDS, preds, f1s))
    ]


def test_joint_summary_by_hand():
    rows = {  # deliberately not in sorted order
        "b": _rows(["the Denver Broncos!", "Lyon", "Santa Clara", "1879"], [1.0, 0.0, 0.8, 1.0]),
        "a": _rows(["Carolina", "Paris", "Santa Clara", "1880"], [0.0, 1.0, 0.8, 0.0]),
    }
    # scores[scorer][candidate][i]; each scorer alone would sometimes pick the other answer
    scores = {
        "a": {"a": [-1.0, -3.0, -1.0, -2.0], "b": [-0.5, -1.0, -1.0, -2.0]},
        "b": {"a": [-0.2, -0.5, -1.0, -2.0], "b": [-2.0, -3.0, -1.0, -2.0]},
    }
    # totals: ex0 a=-1.2 b=-2.5 → a; ex1 a=-3.5 b=-4.0 → a; ex2 tie → a (first in sorted order);
    # ex3 tie → a ("1880": F1 0)
    out = joint_summary(rows, scores)
    assert out["n"] == 4
    assert out["f1_a"] == pytest.approx(0.45) and out["f1_b"] == pytest.approx(0.7)
    assert out["f1_best_single"] == pytest.approx(0.7)
    f1_santa = 2 * (1.0 * 2 / 3) / (1.0 + 2 / 3)  # "santa clara" vs "santa clara california"
    assert out["f1_joint"] == pytest.approx((0.0 + 1.0 + f1_santa + 0.0) / 4)
    # oracle: best candidate per example, recomputed from the predictions (not the rows' f1)
    assert out["f1_oracle"] == pytest.approx((1.0 + 1.0 + f1_santa + 1.0) / 4)
    # agreement after SQuAD normalisation: only "Santa Clara" == "Santa Clara"
    assert out["agreement"] == pytest.approx(1 / 4)
    # per-example picks, for the paired bootstrap of joint − best single
    assert [e["pick"] for e in out["examples"]] == ["a"] * 4
    assert [e["id"] for e in out["examples"]] == ["q0", "q1", "q2", "q3"]
    assert [e["f1_joint"] for e in out["examples"]] == pytest.approx([0.0, 1.0, f1_santa, 0.0])


def test_joint_pick_follows_the_summed_scores():
    rows = {"a": _rows(["x", "Paris", "x", "x"], [0.0] * 4), "b": _rows(["y", "Lyon", "y", "y"], [0.0] * 4)}

    def scores(a_total: float) -> dict:
        zero = [0.0] * 4
        return {"a": {"a": [0.0, a_total, 0.0, 0.0], "b": zero}, "b": {"a": zero, "b": zero}}

    assert joint_summary(rows, scores(+0.1))["f1_joint"] == pytest.approx(0.25)  # picks "Paris"
    assert joint_summary(rows, scores(-0.1))["f1_joint"] == pytest.approx(0.0)  # picks "Lyon"


def test_agreement_uses_normalisation():
    rows = {
        "a": _rows(["The Denver Broncos.", "paris", "x", "1879"], [1.0] * 4),
        "b": _rows(["denver  broncos", "Paris!", "y", "an 1879"], [1.0] * 4),
    }
    scores = {s: {c: [0.0] * 4 for c in "ab"} for s in "ab"}
    assert joint_summary(rows, scores)["agreement"] == pytest.approx(3 / 4)


CANDIDATES = ["Denver Broncos", "Paris", "a much longer answer with many words in it", ""]
EXAMPLES = [
    {"question": "Who won Super Bowl 50?", "context": "Denver Broncos defeated the Carolina Panthers."},
    {"question": "What is the capital of France?", "context": "Paris is the capital of France."},
    {"question": "Where?", "context": "Levi's Stadium in Santa Clara."},
    {"question": "When?", "context": "In 1879."},
]


@torch.no_grad()
def test_candidate_scores_equal_a_manual_forward(tiny_lm):
    """Batched, padded scores equal one unpadded forward over prompt + candidate ids per example."""
    tok, chat, args = tiny_lm.tokenizer, tiny_lm.uses_chat_template, PromptArgs()
    eos = eos_id(tok, tiny_lm.spec.eos_token)
    prompt_ids = [build_prompt(e, tok, args, chat, "text").ids for e in EXAMPLES]
    prompts = [embed_ids(tiny_lm.model, p, tiny_lm.device) for p in prompt_ids]
    got = candidate_scores(tiny_lm, prompts, CANDIDATES, args)
    assert len(got) == len(CANDIDATES) and all(math.isfinite(s) and s < 0 for s in got)
    for p, cand, score in zip(prompt_ids, CANDIDATES, got):
        ans = answer_ids(cand, tok, args, chat, eos)
        assert ans[-1] == eos
        logits = tiny_lm.model(input_ids=torch.tensor([p + ans])).logits[0].float()
        lp = torch.log_softmax(logits[len(p) - 1 : len(p) - 1 + len(ans)], dim=-1)
        want = lp.gather(-1, torch.tensor(ans).unsqueeze(-1)).mean().item()  # mean incl. the end token
        assert score == pytest.approx(want, abs=1e-4)
    assert candidate_scores(tiny_lm, prompts, CANDIDATES, args) == got  # deterministic
