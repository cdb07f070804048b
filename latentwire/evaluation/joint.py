"""Two-model synergy: both receivers answer from the same Z; joint rescoring picks one answer.

Each candidate (every receiver's own prediction) is scored under every receiver by the
length-normalised log-probability of its answer ids after that receiver's latent prompt; the
candidate with the highest sum wins. Reported beside each model alone: the joint pick, the agreement
rate and the oracle bound (best candidate per example).
"""

from __future__ import annotations

import torch

from latentwire.batching import collate, pad_answers
from latentwire.evaluation.evaluate import model_view
from latentwire.evaluation.metrics import f1_score, mean, normalize_answer
from latentwire.kv_prefix import KVPrefix, with_prefix
from latentwire.latent.prompts import latent_inputs
from latentwire.prompt import answer_ids, content_text, eos_id, prompt_for
from latentwire.scoring import answer_logits, token_logprobs


@torch.no_grad()
def candidate_scores(
    lm, prompts: list[torch.Tensor], candidates: list[str], prompt_args, prefix: KVPrefix | None = None
) -> list[float]:
    """Mean log-prob per token of each candidate (incl. end token) given its prompt (and the batch's
    deep prefix, if any). Returns B floats."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    own = prompt_for(lm.spec, prompt_args)
    ids = [answer_ids(c, tok, own, chat, eos) for c in candidates]
    batch, kw = with_prefix(lm.model, collate(lm.model, prompts, ids), prefix)
    lp = token_logprobs(answer_logits(lm.model, batch, **kw), pad_answers(ids, lm.device))
    n = torch.tensor([len(i) for i in ids], device=lp.device, dtype=lp.dtype)
    return (lp.sum(-1) / n).tolist()


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
        z = interlingua.encode([content_text(v, prompt_args) for v in chunk])  # (B, M, d_z)
        for lm in lms:
            prompts, prefix = latent_inputs(lm, interlingua, prompt_args, chunk, z)
            for c in names:
                cands = [r["prediction"] for r in rows_by_model[c][start : start + batch_size]]
                scores[lm.spec.name][c] += candidate_scores(lm, prompts, cands, prompt_args, prefix)
    return joint_summary(rows_by_model, scores)
