"""Evaluation: generate and score answers for any way of building prompts.

A *prompt maker* turns a list of examples into per-example prompt embeddings plus facts about
each prompt (token counts, bytes). Text baselines and latent prefixes only differ there; this
module then runs greedy generation, one teacher-forced scoring pass and the answer metrics with
the same code for all of them.

Only ``question`` and ``context`` of an example ever reach a prompt maker (:func:`model_view`),
so no gold-derived field can leak into a model input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from latentwire.batching import PromptMaker, collate, pad_answers
from latentwire.config import FieldError
from latentwire.evaluation.metrics import ANSWER_METRICS, mean, percentile_summary, postprocess_answer
from latentwire.generation import generate_and_score, stop_at_strings
from latentwire.kv_prefix import KVPrefix, with_prefix
from latentwire.models import LoadedModel
from latentwire.models.loading import device_problem
from latentwire.prompt import PromptArgs, answer_ids, cut_at_stop, eos_id, prompt_for, stop_strings
from latentwire.scoring import answer_logits, answer_nll, first_token_ranks

log = logging.getLogger(__name__)


#: Max per-example NLL difference (nats/token) between cache scoring and the full forward that
#: still counts as agreement (bf16 rounding differs between the two paths).
SCORING_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.25, torch.float16: 0.1}

#: Rows of the first batch on which cache scoring is checked against the full forward.
CHECK_ROWS = 8

#: Share of distinct predictions below which a system counts as collapsed.
COLLAPSE_RATIO = 0.1


@dataclass
class EvalArgs:
    """How examples are selected and decoded."""

    split: str = "test"
    n_examples: int = 200  # first N of the split after a seeded shuffle; 0 = all
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 24
    device: str = "auto"

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.n_examples < 0:
            raise ValueError("batch_size and max_new_tokens must be >= 1, n_examples >= 0")
        if device_problem(self.device):
            raise FieldError("device", device_problem(self.device))


def model_view(example: dict) -> dict:
    """The only fields of an example a model may see."""
    return {"question": example["question"], "context": example["context"]}


def select_examples(df, args: EvalArgs) -> list[dict]:
    """A deterministic subset of a split: seeded shuffle, first ``n_examples``."""
    df = df.sample(frac=1.0, random_state=args.seed) if args.n_examples else df
    if args.n_examples:
        df = df.head(args.n_examples)
    rows = df.to_dict("records")
    for r in rows:
        r["answers"] = [str(a) for a in r["answers"]]
    return rows


@torch.no_grad()
def evaluate(
    lm: LoadedModel,
    examples: Sequence[dict],
    make_prompts: PromptMaker,
    prompt_args: PromptArgs,
    args: EvalArgs,
    desc: str = "eval",
) -> tuple[list[dict], dict[str, Any]]:
    """Run generation + scoring over ``examples``; return (per-example rows, summary metrics).

    ``prompt_args``: the run's prompt; ``lm``'s registry override is applied here (prompt_for)."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    prompt_args = prompt_for(lm.spec, prompt_args)
    stops = stop_strings(prompt_args, chat)
    eos = eos_id(tok, lm.spec.eos_token)
    stop = {eos} | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
    rows: dict[int, dict] = {}
    scoring: dict[str, Any] = {"method": "prefill-cache", "check_max_abs_nll_diff": None}
    order = length_order(examples)
    for start in tqdm(range(0, len(examples), args.batch_size), desc=desc, mininterval=10):
        where = order[start : start + args.batch_size]  # positions in ``examples`` of this batch
        chunk = [examples[j] for j in where]
        made = make_prompts([model_view(e) for e in chunk])
        prompts, facts, prefix = made.embeds, made.facts, made.prefix
        golds = [answer_ids(e["answers"][0], tok, prompt_args, chat, eos) for e in chunk]
        gold = pad_answers(golds, lm.device)  # (B, A)
        via_cache = scoring["method"] == "prefill-cache"
        batch, kw = with_prefix(lm.model, collate(lm.model, prompts), prefix)
        gen = generate_and_score(
            lm.model,
            batch,
            args.max_new_tokens,
            stop,
            gold if via_cache else None,
            stop=stop_at_strings(tok, stops),
            **kw,
        )
        logits = gen.answer_logits
        if scoring["check_max_abs_nll_diff"] is None:
            # Scoring through a copy of the prefill cache saves a forward, but it is only trusted
            # once it matches the plain teacher-forced forward on the first batch (it did not on
            # one CUDA setup); otherwise the full forward scores every batch. The check reads the
            # first CHECK_ROWS rows only: on a whole large batch it would cost a second prefill.
            n = min(len(chunk), CHECK_ROWS)
            full = _full_logits(lm, prompts[:n], golds[:n], head_rows(prefix, n))  # (n, A_n, V)
            diff = answer_nll(logits[:n], gold[:n]) - answer_nll(full, pad_answers(golds[:n], lm.device))
            scoring["check_max_abs_nll_diff"] = float(diff.abs().max())
            if scoring["check_max_abs_nll_diff"] > SCORING_TOLERANCE.get(lm.dtype, 0.25):
                log.warning(
                    "cache scoring differs from the full forward by %.3f nats; using the full forward",
                    scoring["check_max_abs_nll_diff"],
                )
                scoring["method"] = "full-forward"
        if scoring["method"] == "full-forward":
            logits = _full_logits(lm, prompts, golds, prefix)  # (B, A, V)
        nll = answer_nll(logits, gold).tolist()
        ranks = first_token_ranks(logits, gold).tolist()
        B = len(chunk)
        for i, ex in enumerate(chunk):
            raw = tok.decode(gen.tokens[i], skip_special_tokens=True)
            pred = postprocess_answer(cut_at_stop(raw, stops))
            row = {
                "id": ex["id"],
                "title": ex.get("title", ""),  # the article: the bootstrap's cluster
                "question": ex["question"],
                "answers": ex["answers"],
                "prediction": pred,
                "raw": raw,
                "first_token": gen.tokens[i][0] if gen.tokens[i] else None,
                "nll_per_token": nll[i],
                "first_token_rank": ranks[i],
                "gen_tokens": len(gen.tokens[i]),
                "batch_size": B,
                "prefill_s": gen.prefill_s,
                "decode_s_per_token": gen.decode_s / max(gen.decode_steps, 1),
                **facts[i],
            }
            for name in ANSWER_METRICS.names():
                row[name] = ANSWER_METRICS.get(name)(pred, ex["answers"])
            rows[where[i]] = row
    ordered = [rows[j] for j in range(len(examples))]  # the input order, whatever the batches were
    return ordered, {**summarize(ordered, lm), "scoring": scoring}


def _full_logits(lm: LoadedModel, prompts, golds: list[list[int]], prefix: KVPrefix | None) -> torch.Tensor:
    """Teacher-forced answer logits (B, A, V) of one forward over prompt + gold answer."""
    batch, kw = with_prefix(lm.model, collate(lm.model, prompts, golds), prefix)
    return answer_logits(lm.model, batch, **kw)


def length_order(examples: Sequence[dict]) -> list[int]:
    """Positions of ``examples``, longest question + context first (characters; stable on ties).

    Batching neighbours of similar length wastes little on left padding (a row's result does not
    depend on its batch beyond fp rounding, tested), and the longest batch comes first, so memory
    peaks at once. Rows are returned in input order."""
    size = [len(e["question"]) + len(e["context"]) for e in examples]
    return sorted(range(len(examples)), key=lambda j: -size[j])


def head_rows(prefix: KVPrefix | None, n: int) -> KVPrefix | None:
    """The first ``n`` rows of a batch's K/V prefix (None stays None)."""
    if prefix is None:
        return None
    mask = None if prefix.mask is None else prefix.mask[:n]
    return KVPrefix([k[:n] for k in prefix.keys], [v[:n] for v in prefix.values], mask)


def summarize(rows: list[dict], lm: LoadedModel | None = None) -> dict[str, Any]:
    """Aggregate per-example rows into the metrics every table reports."""
    preds = [r["prediction"] for r in rows]
    firsts = [r["first_token"] for r in rows]
    out: dict[str, Any] = {"n": len(rows)}
    for name in ANSWER_METRICS.names():
        out[name] = mean([r[name] for r in rows])
    out["nll_per_token"] = mean([r["nll_per_token"] for r in rows])
    out["first_token_top1"] = mean([float(r["first_token_rank"] < 1) for r in rows])
    out["first_token_top5"] = mean([float(r["first_token_rank"] < 5) for r in rows])
    for key in (
        "prompt_tokens",
        "content_positions",
        "text_content_tokens",
        "wire_slots",
        "payload_bytes",
        "payload_id_bytes",
        "text_bytes",
    ):
        if rows and key in rows[0]:
            out[key] = mean([r[key] for r in rows])
    if "content_positions" in out and out["content_positions"]:
        out["compression"] = out["text_content_tokens"] / out["content_positions"]
    # One timing per batch (rows of a batch share it): summarise over batches, not rows.
    batches = {(r["prefill_s"], r["decode_s_per_token"]) for r in rows}
    out["prefill_ms"] = {k: v * 1e3 for k, v in percentile_summary([b[0] for b in batches]).items()}
    out["decode_ms_per_token"] = {k: v * 1e3 for k, v in percentile_summary([b[1] for b in batches]).items()}
    out["batch_size"] = max((r["batch_size"] for r in rows), default=0)
    out["unique_predictions"] = len(set(preds))
    out["unique_prediction_ratio"] = len(set(preds)) / max(len(preds), 1)
    out["unique_first_tokens"] = len(set(firsts))
    # Collapse flag (same threshold as training's default stop): one answer for (nearly) every input.
    out["collapsed"] = bool(len(preds) >= 10 and out["unique_prediction_ratio"] < COLLAPSE_RATIO)
    if lm is not None:
        out["device"] = str(lm.device) + (
            f" ({torch.cuda.get_device_name(lm.device)})" if lm.device.type == "cuda" else ""
        )
        out["dtype"] = str(lm.dtype).replace("torch.", "")
        out["model"] = lm.spec.name
    return out
