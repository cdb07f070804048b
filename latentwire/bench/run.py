"""``run_bench``: build the random-weight receivers, run the phases, and the ratios against the targets."""

from __future__ import annotations

import copy
import dataclasses
import time

import torch

from latentwire.bench.args import TARGETS, BenchArgs, resolve_compile, resolve_dtype
from latentwire.bench.latency import measure_eval
from latentwire.bench.layout import layout_info, model_info
from latentwire.bench.pretrain import measure_pretrain
from latentwire.bench.train import measure_ceiling, measure_step
from latentwire.config import to_dict
from latentwire.evaluation.timing import device_info, sync
from latentwire.latent.build import build_interlingua
from latentwire.models.loading import pick_device
from latentwire.models.synthetic import build_bench_tokenizer, build_random_receiver, synthetic_examples


def run_bench(args: BenchArgs) -> dict:
    """Build the receivers, measure every phase in ``args.phases`` and return the result record."""
    t_start = time.perf_counter()
    device = pick_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    run = copy.deepcopy(args.run)
    run.latent.n_shared = args.slots - run.latent.n_private  # each receiver reads exactly M slots
    tok = build_bench_tokenizer(run.prompt)
    lms = [
        build_random_receiver(f, args.shapes, tok, device, dtype, args.attn, args.nf4, args.seed + i)
        for i, f in enumerate(args.models)
    ]
    examples = synthetic_examples(
        tok,
        run.prompt,
        lms[0].uses_chat_template,
        args.batch_size,
        args.text_tokens,
        args.answer_tokens,
        args.seed,
        args.answer_spread,
    )
    torch.manual_seed(args.seed)
    il = build_interlingua(run.latent, lms, device)
    # compiled receivers for (a) and (b) only: generation's growing cache would recompile every step
    compiled = resolve_compile(args.compile, device)
    fast = [dataclasses.replace(lm, model=torch.compile(lm.model)) for lm in lms] if compiled else lms
    sync(device)
    result: dict = {
        "device": device_info(device),
        "dtype": str(dtype).removeprefix("torch."),
        "settings": {**to_dict(args), "run": to_dict(run)},
        "models": {lm.spec.name: model_info(lm) for lm in lms},
        "layout": layout_info(lms, run, examples, args.slots),
        "build_s": time.perf_counter() - t_start,
        "compiled": compiled,
    }
    if "ceiling" in args.phases:
        result["ceiling"] = measure_ceiling(fast, run, examples, args, device, minimal=True)
        if args.full_prompt_ceiling:
            result["ceiling_full_prompt"] = measure_ceiling(fast, run, examples, args, device, minimal=False)
    if "step" in args.phases:
        result["step"] = measure_step(fast, il, run, examples, args, device)
    if "pretrain" in args.phases:  # uncompiled, as pretrain-encoder runs it
        result["pretrain"] = measure_pretrain(lms, il, args, device)
    if "eval" in args.phases:
        result["eval"] = {lm.spec.name: measure_eval(lm, il, run, examples, args, device) for lm in lms}
        result["eval_by_batch"] = {}  # end to end at each eval_batch_sizes entry (encoder included)
        for b in args.eval_batch_sizes:
            rows = [examples[i % len(examples)] for i in range(b)]
            result["eval_by_batch"][str(b)] = {
                lm.spec.name: measure_eval(lm, il, run, rows, args, device) for lm in lms
            }
    if compiled:  # what compilation cost: each row's first warm-up call over its median, summed per phase
        result["compile_s"] = {
            ph: sum(
                max(0.0, r.get("first_call_overhead_s", 0.0))
                for r in result[ph].values()
                if isinstance(r, dict)
            )
            for ph in ("ceiling", "ceiling_full_prompt", "step")
            if ph in result
        }
    result["ratios"] = ratios(result)
    values = {**result["ratios"]}
    if "step" in result:
        values["step_samples_per_min"] = result["step"]["all"]["samples_per_min"]
    result["targets"] = {
        k: {"target": v, "value": values.get(k), "met": _met(values.get(k), v)} for k, v in TARGETS.items()
    }
    result["total_s"] = time.perf_counter() - t_start
    return result


def ratios(result: dict) -> dict:
    """(b)/(a) throughput and text/latent prefill ratios (the smallest over receivers, and each)."""
    out: dict = {}
    if "ceiling" in result and "step" in result:
        out["step_over_ceiling"] = result["ceiling"]["all"]["median_ms"] / result["step"]["all"]["median_ms"]
    if "ceiling_full_prompt" in result and "step" in result:
        out["step_over_full_prompt_ceiling"] = (
            result["ceiling_full_prompt"]["all"]["median_ms"] / result["step"]["all"]["median_ms"]
        )
    if "eval" in result:
        ev = result["eval"]
        for name, part in (
            ("text_over_latent_prefill", "prefill"),
            ("text_over_latent_prefill_with_prepare", "prepare_plus_prefill"),
        ):
            per = {n: e["text"][part]["median_ms"] / e["latent"][part]["median_ms"] for n, e in ev.items()}
            out[name] = min(per.values())
            out[f"{name}_per_model"] = per
        out["text_over_latent_tokens"] = {
            n: e["text"]["prompt_tokens"] / e["latent"]["prompt_tokens"] for n, e in ev.items()
        }
        # the bound the prefill ratio can reach: computed columns, the cached head left out of both
        out["text_over_latent_columns"] = {
            n: e["text"]["prefill_columns"] / e["latent"]["prefill_columns"] for n, e in ev.items()
        }
    return out


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else bool(value >= target)
