"""The gold-answer NLL: the pipeline's scoring equals a hand computation from one full forward.

Fast: on the tiny models. Slow: on the packaged Qwen2.5-Coder-0.5B with real SQuAD dev questions,
pinned to the value the supported versions give (issue 16: 0.95 under transformers 5.24 but 2.95
under 5.17, whose GGUF export ended every answer in <|endoftext|> instead of the model's <|im_end|>).
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from latentwire.data import read_squad
from latentwire.evaluation.nll_check import nll_check
from latentwire.models import load_model, load_registry
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id

REPO = Path(__file__).resolve().parents[2]
SQUAD_DEV = REPO / "resources" / "squad-dev-v1.1.json.gz"
TOY = [
    {"id": f"t{i}", "question": q, "context": c, "answers": [a]}
    for i, (q, c, a) in enumerate(
        [
            ("What is the capital of France?", "Paris is the capital and largest city of France.", "Paris"),
            ("Who won Super Bowl 50?", "Denver Broncos defeated the Carolina Panthers 24 to 10.", "Denver"),
            ("What jumps over the dog?", "The quick brown fox jumps over the lazy dog.", "the quick fox"),
        ]
    )
]


def hand_nll(lm, example: dict, prompt_args: PromptArgs) -> float:
    """Token by token, from the logits of one forward over prompt + gold answer (no padding, no cache)."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    prompt = build_prompt(example, tok, prompt_args, chat, "text").ids
    gold = answer_ids(example["answers"][0], tok, prompt_args, chat, eos_id(tok, lm.spec.eos_token))
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([prompt + gold])).logits[0].double()  # (T + A, V)
    nlls = [-F.log_softmax(logits[len(prompt) - 1 + j], -1)[g].item() for j, g in enumerate(gold)]
    return sum(nlls) / len(nlls)


def test_pipeline_nll_equals_the_hand_computation_on_tiny_models(tiny_lm):
    out = nll_check(tiny_lm, TOY, PromptArgs(), batch_size=2)  # batch 2: padding in the pipeline
    hand = [hand_nll(tiny_lm, e, PromptArgs()) for e in TOY]
    for row, want in zip(out["per_example"], hand):
        assert row["pipeline"] == pytest.approx(want, abs=1e-4) and row["hand"] == pytest.approx(
            want, abs=1e-4
        )


def packaged(name: str):
    manifest = REPO / "resources" / "models" / name / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} missing (scripts/test.sh materializes it)")
    spec = load_registry(REPO / "config" / "models.yaml")[name]
    return load_model(spec, manifest, device="cpu")


@pytest.mark.slow
def test_packaged_qwen_text_prompt_nll_by_hand_equals_the_pipeline_and_the_pinned_value():
    torch.set_num_threads(2)
    lm = packaged("qwen2.5-coder-0.5b")
    examples = read_squad(SQUAD_DEV)[:4]
    out = nll_check(lm, examples, PromptArgs(), batch_size=4)
    hand = [hand_nll(lm, e, PromptArgs()) for e in examples]
    for row, want in zip(out["per_example"], hand):
        assert row["pipeline"] == pytest.approx(want, abs=1e-3), row["id"]
    assert out["end_of_answer"]["token"] == "<|im_end|>"
    # the supported versions (constraints.txt), fp32 on CPU; transformers 5.17's export gave 3.874
    assert out["nll_per_token_pipeline"] == pytest.approx(0.6576, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "smollm2-135m"])
def test_packaged_models_end_answers_with_the_token_that_closes_their_chat_turn(name):
    """The invariant that transformers 5.17 broke: the answer's end token is the chat template's."""
    lm = packaged(name)
    tok = lm.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "XYZ"}], tokenize=False
    )
    end = tok.convert_ids_to_tokens(eos_id(tok, lm.spec.eos_token))
    assert text.split("XYZ", 1)[1].startswith(end), (name, end, text)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_packaged_predictions_do_not_depend_on_the_eval_batching(name):
    """Issue 17: 16 SQuAD dev questions, text and budget-48 prompts, through evaluate() one at a time
    (no padding) and in length-sorted batches of 16: the same predictions and first-token ranks,
    NLL to fp32 rounding."""
    from latentwire.evaluation.baselines import text_prompt_maker
    from latentwire.evaluation.evaluate import EvalArgs, evaluate

    torch.set_num_threads(2)
    lm = packaged(name)
    examples = read_squad(SQUAD_DEV)[:16]
    for baseline in ("budget-48", "text"):
        maker = text_prompt_maker(lm, PromptArgs(), baseline)
        runs = [
            evaluate(
                lm, examples, maker, PromptArgs(), EvalArgs(batch_size=b, max_new_tokens=24, device="cpu")
            )[0]
            for b in (1, 16)
        ]
        alone, batched = runs
        assert [r["prediction"] for r in batched] == [r["prediction"] for r in alone], baseline
        assert [r["first_token_rank"] for r in batched] == [r["first_token_rank"] for r in alone]
        for a, b in zip(alone, batched):
            assert b["nll_per_token"] == pytest.approx(a["nll_per_token"], abs=1e-4), (baseline, a["id"])


@pytest.mark.slow
def test_packaged_select_encoder_reads_the_same_states_in_length_groups():
    """Issue 17: the select encoder's source states (Qwen layer 8, 384 tokens) in length-sorted
    groups equal one padded forward on 16 SQuAD texts to fp32 rounding, and the kept windows agree."""
    from unittest import mock

    from latentwire.encoders import EncoderArgs, build_encoder
    from latentwire.encoders.source import SourceReader

    torch.set_num_threads(2)
    lm = packaged("qwen2.5-coder-0.5b")
    texts = [f"Question: {e['question']}\nContext: {e['context']}" for e in read_squad(SQUAD_DEV)[:16]]
    args = EncoderArgs(name="select", d_z=896, source_model=lm.spec.name, source_layer=8, max_enc_tokens=384)
    enc = build_encoder(args, 48, {lm.spec.name: lm}).eval()
    ids, mask = enc.source.tokenize(texts)
    with torch.no_grad():
        padded = enc.source.trunk(
            input_ids=ids, attention_mask=mask.long(), use_cache=False
        ).last_hidden_state
        grouped = enc.source.hidden(ids, mask)
    scale = float(padded[mask].abs().max())
    assert float((grouped[mask] - padded[mask]).abs().max()) <= 1e-6 * scale
    grouped_kept = enc.kept_tokens(texts)

    def one_padded_forward(self, ids, mask):
        return self.trunk(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state

    with mock.patch.object(SourceReader, "hidden", one_padded_forward):
        assert enc.kept_tokens(texts) == grouped_kept
