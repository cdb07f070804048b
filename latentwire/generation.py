"""Prefill once, then score the gold answer and decode greedily from the same KV cache.

Works for text prompts (embedded ids) and latent prefixes alike, since both arrive as
``inputs_embeds``. Scoring runs the gold answer through a copy of the prefilled cache, so the
prompt is encoded once per example for both generation and NLL/first-token metrics. Timings
synchronise CUDA around each timed region; prefill and decode are timed apart.

A row stops at an eos id or, with a ``stop`` rule (:func:`stop_at_strings`), as soon as its text
reaches a stop string (a base model's newline or next "Question:"), so no decode step is spent on
text that post-processing would cut anyway. A row that stops leaves the batch: its cache row is
dropped and later steps run on the rows still decoding only (``decode_steps`` counts steps, however
many rows each had).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentwire.batching import Batch


@dataclass
class Generation:
    """Generated ids per row (eos stripped), answer logits if scored, and batch timings."""

    tokens: list[list[int]]
    prefill_s: float
    decode_s: float
    decode_steps: int
    answer_logits: torch.Tensor | None = None  # (B, A, V) float32: logits predicting each gold token


#: A stop rule: the ids generated so far for one row -> whether that row is done.
StopRule = Callable[[list[int]], bool]


def stop_at_strings(tok, strings: list[str]) -> StopRule | None:
    """A stop rule that ends a row once its decoded text, leading whitespace aside, contains one of
    ``strings`` (the stopping token is kept; :func:`latentwire.prompt.cut_at_stop` trims the text).
    None when ``strings`` is empty."""
    if not strings:
        return None

    def done(ids: list[int]) -> bool:
        text = tok.decode(ids, skip_special_tokens=True).lstrip()
        return any(s in text for s in strings)

    return done


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate_and_score(
    model: torch.nn.Module,
    batch: Batch,
    max_new_tokens: int,
    eos_ids: set[int],
    answers: torch.Tensor | None = None,
    stop: StopRule | None = None,
    **model_kwargs,
) -> Generation:
    """Greedy continuation of every row of ``batch`` (a prompt-only batch).

    ``answers`` (B, A) long with -100 padding: when given, their teacher-forced logits are
    returned too, computed through a copy of the prefilled cache. ``model_kwargs`` go to the
    prefill call only (for example a prefilled ``past_key_values``). ``stop``: a text stop rule
    checked on every row after each new token (:func:`stop_at_strings`).
    """
    device = batch.inputs_embeds.device
    B = batch.inputs_embeds.shape[0]
    mask = batch.attention_mask
    _sync(device)
    t0 = time.perf_counter()
    out = model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=mask,
        position_ids=batch.position_ids,
        use_cache=True,
        logits_to_keep=1,
        **model_kwargs,
    )
    first_logits = out.logits[:, -1].float()  # (B, V)
    nxt = first_logits.argmax(-1)  # (B,)
    _sync(device)
    t1 = time.perf_counter()
    past = out.past_key_values
    position = batch.position_ids[:, -1:]  # (B, 1)
    scored = None
    if answers is not None:
        scored = score_answers(model, copy.deepcopy(past), mask, position, first_logits, answers)
    _sync(device)
    t2 = time.perf_counter()
    tokens: list[list[int]] = [[] for _ in range(B)]
    rows = list(range(B))  # the batch row each still-decoding cache row belongs to
    eos = torch.tensor(sorted(eos_ids), device=device)
    steps = 0
    for step in range(max_new_tokens):
        finished = torch.isin(nxt, eos).tolist()  # (R,) over the rows still decoding: one host copy
        ids = nxt.tolist()
        for j, i in enumerate(rows):
            if not finished[j]:
                tokens[i].append(ids[j])
                if stop is not None and stop(tokens[i]):
                    finished[j] = True
        if all(finished) or step == max_new_tokens - 1:
            break
        if any(finished):  # finished rows leave the batch: no decode step is spent on them
            live = [j for j, f in enumerate(finished) if not f]
            keep = torch.tensor(live, device=device)  # (R',)
            past.batch_select_indices(keep)
            mask, position, nxt = mask[keep], position[keep], nxt[keep]
            rows = [rows[j] for j in live]
        R = len(rows)
        mask = torch.cat([mask, torch.ones(R, 1, dtype=mask.dtype, device=device)], dim=1)
        position = position + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=position,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1)
        steps += 1
    _sync(device)
    t3 = time.perf_counter()
    return Generation(tokens, t1 - t0, t3 - t2, steps, scored)


def score_answers(model, past, mask, position, first_logits, answers) -> torch.Tensor:
    """Teacher-forced logits (B, A, V) float32 for right-padded ``answers`` (B, A) continuing a
    prefilled cache ``past`` (mutated: pass a copy to reuse it), whose prompt mask is ``mask``
    (B, T), last position ids ``position`` (B, 1) and last-column logits ``first_logits`` (B, V)."""
    B, A = answers.shape
    ans_mask = (answers != -100).long()
    ids = answers.clamp(min=0)
    full_mask = torch.cat([mask, ans_mask], dim=1)
    pos = position + torch.arange(1, A + 1, device=answers.device)  # (B, A)
    out = model(
        input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=past, use_cache=True
    )
    # logits at answer column j predict token j + 1; the prefill's last column predicts token 0.
    return torch.cat([first_logits[:, None], out.logits[:, :-1].float()], dim=1)  # (B, A, V)
