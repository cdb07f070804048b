"""How far the CPU default's evaluation jobs are from this machine's limit (issue #17).

For each given baseline ``metrics.json`` (an evaluation of 200 questions, batches of ``batch_size``):
the job's own prefill and decode times (its metrics), against

- a bare forward of the same receiver over the same number of prompt tokens (one batch of the mean
  prompt length, ``logits_to_keep=1``, no prompt building, no scoring) and a bare decode step with a
  KV cache of that length: what the job cannot go below with these weights at fp32;
- the matmul rate of this machine at the same thread count (a (T, d) × (d, 4d) fp32 product): the
  rate no dense forward exceeds; the model's linear FLOPs per token (2 × non-embedding parameters,
  plus the head for the one kept position) turn it into a floor in seconds.

    python scripts/cpu_floor.py --threads 2 results/baselines/squad/*/text/metrics.json

Prints one JSON object per file and the matmul rate. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from latentwire.models import load_model, load_registry


def _best(f, n: int = 3) -> float:
    f()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(d: int = 896, tokens: int = 2048) -> float:
    a, b = torch.randn(tokens, d), torch.randn(d, 4 * d)
    return 2 * tokens * d * 4 * d / _best(lambda: a @ b) / 1e9


@torch.no_grad()
def bare(lm, batch: int, length: int) -> dict:
    """Seconds of one bare prefill of (batch, length) and of one decode step after it."""
    ids = torch.randint(100, 1000, (batch, length))
    prefill = _best(lambda: lm.model(input_ids=ids, use_cache=False, logits_to_keep=1))
    out = lm.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    step_ids = torch.randint(100, 1000, (batch, 1))

    def step():
        cache = out.past_key_values
        lm.model(input_ids=step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.crop(-1)  # drop the step again: every repeat decodes at the prefill's length

    return {"prefill_s": prefill, "decode_step_s": _best(step)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--registry", default="config/models.yaml")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(json.dumps({"threads": args.threads, "matmul_gflops": round(peak, 1)}))
    specs, loaded = load_registry(args.registry), {}
    for path in args.metrics:
        m = json.load(open(path))
        name = m["model"]
        if name not in loaded:
            loaded[name] = load_model(specs[name], f"resources/models/{name}/manifest.json", device="cpu")
        lm = loaded[name]
        B, T = int(m["batch_size"]), round(m["prompt_tokens"])
        n_batches = -(-int(m["n"]) // B)
        tables = {id(lm.model.get_input_embeddings().weight), id(lm.model.get_output_embeddings().weight)}
        body = sum(p.numel() for p in lm.model.parameters() if id(p) not in tables)  # untied head too
        head = lm.model.get_output_embeddings().weight.numel()
        flops = 2 * B * T * body + 2 * B * head  # one batch's prefill: every token's layers, one head row
        b = bare(lm, B, T)
        job_prefill = m["prefill_ms"]["mean"] / 1e3
        print(json.dumps({
            "file": path, "model": name, "system": m["system"], "batch": B, "prompt_tokens": T,
            "batches": n_batches,
            "job_prefill_s_per_batch": round(job_prefill, 3),
            "bare_prefill_s_per_batch": round(b["prefill_s"], 3),
            "matmul_floor_s_per_batch": round(flops / (peak * 1e9), 3),
            "job_decode_s_per_token": round(m["decode_ms_per_token"]["mean"] / 1e3, 4),
            "bare_decode_step_s": round(b["decode_step_s"], 4),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
