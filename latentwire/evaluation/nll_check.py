"""The gold-answer NLL of a packaged model's text prompts, by hand and through the pipeline.

:func:`nll_by_hand` scores each example with ONE plain forward over ``prompt ids + answer ids``
(``input_ids``, no padding, no cache, no ``logits_to_keep``): the logits at column ``T - 1 + j`` predict
answer token ``j``. :func:`nll_check` puts that beside what
:func:`latentwire.evaluation.evaluate.evaluate` reports for the same text prompts, together with the
library versions and the tokens that shape the number (the end-of-answer token), so two machines can
compare one JSON to 1e-3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id
from latentwire.provenance import package_versions


@torch.no_grad()
def nll_by_hand(lm: LoadedModel, example: dict, prompt_args: PromptArgs) -> float:
    """Mean NLL per gold-answer token (the first gold answer, ending in the end-of-answer id)."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    prompt = build_prompt(example, tok, prompt_args, chat, "text").ids
    gold = answer_ids(example["answers"][0], tok, prompt_args, chat, eos_id(tok, lm.spec.eos_token))
    ids = torch.tensor([prompt + gold], device=lm.device)  # (1, T + A)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()  # (T + A, V)
    T, A = len(prompt), len(gold)
    lp = F.log_softmax(logits[T - 1 : T - 1 + A], dim=-1)  # (A, V): column T-1+j predicts gold[j]
    return float(-lp.gather(-1, torch.tensor(gold, device=lm.device)[:, None]).mean())


def nll_check(lm: LoadedModel, examples: list[dict], prompt_args: PromptArgs, batch_size: int = 8) -> dict:
    """Per-example and mean NLL/token by hand and through ``evaluate``, plus what shaped them."""
    from latentwire.evaluation.baselines import text_prompt_maker
    from latentwire.evaluation.evaluate import EvalArgs, evaluate

    hand = [nll_by_hand(lm, e, prompt_args) for e in examples]
    ev = EvalArgs(n_examples=0, batch_size=batch_size, max_new_tokens=8, device=str(lm.device))
    rows, summary = evaluate(lm, examples, text_prompt_maker(lm, prompt_args, "text"), prompt_args, ev)
    pipe = [r["nll_per_token"] for r in rows]
    tok = lm.tokenizer
    eos = eos_id(tok, lm.spec.eos_token)
    out: dict[str, Any] = {
        "model": lm.spec.name,
        "device": str(lm.device),
        "dtype": str(lm.dtype).replace("torch.", ""),
        "packages": package_versions(),
        "end_of_answer": {"id": eos, "token": tok.convert_ids_to_tokens(eos)},
        "tokenizer_eos": {"id": tok.eos_token_id, "token": tok.eos_token},
        "ids": [e["id"] for e in examples],
        "nll_per_token_by_hand": sum(hand) / len(hand),
        "nll_per_token_pipeline": sum(pipe) / len(pipe),
        "max_abs_diff": max(abs(a - b) for a, b in zip(hand, pipe)),
        "per_example": [{"id": e["id"], "hand": h, "pipeline": p} for e, h, p in zip(examples, hand, pipe)],
        "f1": summary["f1"],
        "scoring": summary["scoring"],
    }
    return out
