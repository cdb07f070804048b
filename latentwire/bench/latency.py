"""Phase (c): prompt building, prefill and decode latency of the text prompt vs the latent prompt."""

from __future__ import annotations

import time

import torch

from latentwire.batching import collate
from latentwire.bench.args import NO_EOS, BenchArgs
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.evaluate import model_view
from latentwire.evaluation.timing import summarize_times, sync
from latentwire.generation import generate_and_score
from latentwire.kv_prefix import with_prefix
from latentwire.latent.interlingua import Interlingua
from latentwire.latent.prompts import latent_prompt_maker
from latentwire.models import LoadedModel
from latentwire.training.args import LatentRunArgs


@torch.no_grad()
def measure_eval(
    lm: LoadedModel,
    il: Interlingua,
    run: LatentRunArgs,
    examples: list[dict],
    args: BenchArgs,
    device: torch.device,
) -> dict:
    """Prompt building, prefill and decode latency of the text prompt vs the latent prompt.

    ``prepare`` is the evaluation prompt maker plus :func:`collate` (text: tokenize + embed; latent:
    encoder + adapter + scaffold), ``prefill`` the model's forward over the prompt batch alone.
    """
    il.eval()
    views = [model_view(e) for e in examples]
    makers = {
        "text": text_prompt_maker(lm, run.prompt, "text"),
        "latent": latent_prompt_maker(lm, il, run.prompt),
    }
    out = {}
    for kind, make in makers.items():
        prep, prefill, decode, width, cached = [], [], [], 0, 0
        for i in range(args.warmup + args.iters):
            sync(device)
            t0 = time.perf_counter()
            made = make(views)  # made.prefix: the cached scaffold head (and a deep prefix)
            prefix = made.prefix
            batch, kw = with_prefix(lm.model, collate(lm.model, made.embeds), prefix)
            sync(device)
            t1 = time.perf_counter()
            gen = generate_and_score(lm.model, batch, args.decode_tokens, NO_EOS, **kw)
            width, cached = batch.prompt_len, prefix.length if prefix is not None else 0
            if i >= args.warmup:
                prep.append(t1 - t0)
                prefill.append(gen.prefill_s)
                decode.append(gen.decode_s / max(gen.decode_steps, 1))
        out[kind] = {
            "prompt_tokens": width + cached,  # every position the prefill attends over
            "prefill_columns": width,  # the columns it computes (the scaffold head comes cached)
            "prepare": summarize_times(prep),
            "prefill": summarize_times(prefill, len(examples)),
            "prepare_plus_prefill": summarize_times([a + b for a, b in zip(prep, prefill)], len(examples)),
            "decode_per_token": summarize_times(decode),
        }
    il.train()
    return out
