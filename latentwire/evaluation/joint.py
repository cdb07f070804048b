"""Two-model synergy: both receivers answer from the same Z; joint rescoring picks one answer.

Each candidate (every receiver's own prediction) is scored under every receiver by the
length-normalised log-probability of its answer ids after that receiver's latent prompt; the
candidate with the highest sum wins. Reported beside each model alone: the joint pick, the agreement
rate and the oracle bound (best candidate per example).
"""

from __future__ import annotations

import copy

import torch

from latentwire.batching import collate, pad_answers
from latentwire.evaluation.evaluate import model_view
from latentwire.evaluation.metrics import f1_score, mean, normalize_answer
from latentwire.generation import score_answers
from latentwire.kv_prefix import KVPrefix, with_prefix
from latentwire.latent.prompts import encode_views, latent_inputs
from latentwire.prompt import answer_ids, eos_id, prompt_for
from latentwire.scoring import token_logprobs


@torch.no_grad()
def candidate_scores(
    lm, prompts: list[torch.Tensor], candidates: list[str], prompt_args, prefix: KVPrefix | None = None
) -> list[float]:
    """Mean log-prob per token of each candidate (incl. end token) given its prompt (and the batch's
    deep prefix, if any). Returns B floats."""
    return candidate_score_sets(lm, prompts, [candidates], prompt_args, prefix)[0]


@torch.no_grad()
def candidate_score_sets(
    lm,
    prompts: list[torch.Tensor],
    candidate_sets: list[list[str]],
    prompt_args,
    prefix: KVPrefix | None = None,
) -> list[list[float]]:
    """:func:`candidate_scores` of several candidate lists (one per candidate receiver) on the same
    prompts: the prompts are prefilled once and every list is scored from a copy of that cache (as
    evaluation scores the gold answer), instead of one full forward over prompt + answer per list.
    Returns one list of B floats per candidate list."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    own = prompt_for(lm.spec, prompt_args)
    batch, kw = with_prefix(lm.model, collate(lm.model, prompts), prefix)
    out = lm.model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=True,
        logits_to_keep=1,
        **kw,
    )
    first = out.logits[:, -1].float()  # (B, V): predicts each candidate's first token
    position = batch.position_ids[:, -1:]  # (B, 1)
    scores = []
    for candidates in candidate_sets:
        ids = [answer_ids(c, tok, own, chat, eos) for c in candidates]
        gold = pad_answers(ids, lm.device)  # (B, A)
        past = copy.deepcopy(out.past_key_values)
        logits = score_answers(lm.model, past, batch.attention_mask, position, first, gold)  # (B, A, V)
        lp = token_logprobs(logits, gold)
        n = torch.tensor([len(i) for i in ids], device=lp.device, dtype=lp.dtype)
        scores.append((lp.sum(-1) / n).tolist())
    return scores


def joint_summary(rows_by_model: dict[str, list[dict]], scores: dict[str, dict[str, list[float]]]) -> dict:
    """Aggregate joint rescoring.

    ``rows_by_model[m]`` are receiver m's prediction rows (same example order for all m);
    ``scores[scorer][candidate_model][i]`` is scorer's mean log-prob of candidate_model's prediction
    on example i.
    """
    models = sorted(rows_by_model)
    n = len(rows_by_model[models[0]])
    joint_f1, oracle_f1, agree, examples = [], [], [], []
    for i in range(n):
        golds = rows_by_model[models[0]][i]["answers"]
        cands = {m: rows_by_model[m][i]["prediction"] for m in models}
        total = {c: sum(scores[s][c][i] for s in models) for c in models}
        pick = max(models, key=lambda c: (total[c], -models.index(c)))
        joint_f1.append(f1_score(cands[pick], golds))
        oracle_f1.append(max(f1_score(cands[c], golds) for c in models))
        agree.append(float(len({normalize_answer(c) for c in cands.values()}) == 1))
        # per-example picks: what the paired bootstrap of joint − best single (H4) resamples
        examples.append({"id": rows_by_model[models[0]][i]["id"], "pick": pick, "f1_joint": joint_f1[-1]})
    out = {f"f1_{m}": mean([r["f1"] for r in rows_by_model[m]]) for m in models}
    out.update({"f1_joint": mean(joint_f1), "f1_oracle": mean(oracle_f1), "agreement": mean(agree), "n": n})
    out["f1_best_single"] = max(out[f"f1_{m}"] for m in models)
    out["examples"] = examples
    return out


@torch.no_grad()
def rescore_jointly(
    lms, interlingua, prompt_args, examples: list[dict], rows_by_model: dict, batch_size: int
) -> dict:
    """Score every receiver's prediction under every receiver (same Z), then :func:`joint_summary`.

    ``rows_by_model[m]`` are receiver m's latent prediction rows in ``examples`` order.
    """
    names = [lm.spec.name for lm in lms]
    scores = {s: {c: [] for c in names} for s in names}
    for start in range(0, len(examples), batch_size):
        chunk = [model_view(e) for e in examples[start : start + batch_size]]
        z, filled = encode_views(interlingua, chunk, prompt_args)  # (B, M, d_z); slots sent
        cands = [[r["prediction"] for r in rows_by_model[c][start : start + batch_size]] for c in names]
        for lm in lms:
            prompts, prefix = latent_inputs(lm, interlingua, prompt_args, chunk, z, filled)
            for c, got in zip(names, candidate_score_sets(lm, prompts, cands, prompt_args, prefix)):
                scores[lm.spec.name][c] += got
    return joint_summary(rows_by_model, scores)
