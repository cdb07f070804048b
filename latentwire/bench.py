"""Throughput harness (``latentwire bench``): how close the real training step gets to the hardware.

In one run, on random-weight receivers in the published shapes (:mod:`latentwire.models.synthetic`):

(a) **ceiling**: per receiver, the minimal work of a latent training row: a bare frozen forward +
    backward over only the columns that depend on Z — a leaf (B, M + S_suf + A, d) for the M soft
    tokens, the scaffold's suffix and the A answer tokens — reading the scaffold's constant head
    (S_pre tokens) from a K/V prefix computed once (:mod:`latentwire.scaffold_cache`); answer CE from
    the kept logits only, no prompt building; both receivers in sequence form the bare
    multi-receiver step. ``ceiling_full_prompt`` is the earlier ceiling, kept for continuity: the
    same leaf over the whole row (S_pre + M + S_suf + A columns), no mask.
(b) **step**: the project's own Stage B step, :func:`latentwire.training.step.train_step` (encoder, every
    adapter, every enabled loss, the optimizer), on the same batch.
(c) **eval**: per receiver, the evaluation path's prompt building (the real prompt makers) and
    :func:`latentwire.generation.generate_and_score`'s prefill and per-token decode, for the
    ``text_tokens`` text prompt and for the latent prompt.

Timed regions are bracketed by a device synchronise, warm-up iterations are dropped, and medians and
p90s are reported with samples/min = B / median (:mod:`latentwire.evaluation.timing`). ``ratios`` holds
(b)/(a) throughput and text/latent prefill time. Shapes: B batch, M soft tokens per receiver, A answer
tokens (with the end-of-answer id), T_p latent prompt length (scaffold S + M), d receiver width.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from latentwire.batching import Batch, collate, pad_answers
from latentwire.config import to_dict
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.evaluate import model_view
from latentwire.evaluation.timing import device_info, peak_gb, reset_peak, summarize_times, sync, timed
from latentwire.generation import generate_and_score
from latentwire.kv_prefix import with_prefix
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import Interlingua
from latentwire.latent.prompts import latent_prompt_maker
from latentwire.models import LoadedModel
from latentwire.models.loading import pick_device
from latentwire.models.synthetic import (
    Family,
    Shapes,
    build_bench_tokenizer,
    build_random_receiver,
    synthetic_examples,
)
from latentwire.prompt import answer_ids, build_prompt, eos_id, prompt_for
from latentwire.scaffold_cache import scaffold_prefix, shared_scaffold
from latentwire.scoring import answer_logits
from latentwire.training.args import LatentRunArgs
from latentwire.training.losses import masked_ce
from latentwire.training.step import train_step

Phase = Literal["ceiling", "step", "eval"]
NO_EOS = {-1}  # decode always runs decode_tokens steps: random weights may emit eos at any time
#: The issue's targets on one H100/H200, hero shapes, bf16, B=64, M=32, A=16 (see docs/benchmarks.md).
TARGETS = {"step_over_ceiling": 0.8, "text_over_latent_prefill": 8.0}


@dataclass
class BenchArgs:
    """What to measure and at which shapes. ``run`` is the latent run whose step (b) times."""

    shapes: Shapes = "hero"  # hero: Llama-3.1-8B / Qwen2.5-7B sizes; tiny: the 2-layer test models
    models: list[Family] = field(default_factory=lambda: ["llama", "qwen2"])
    batch_size: int = 64  # B
    slots: int = 32  # M: soft tokens each receiver reads (= run.latent n_shared + n_private)
    answer_tokens: int = 16  # A: gold answer ids per example, end-of-answer included
    answer_spread: int = 0  # > 0: answer lengths drawn from A - spread .. A, so batches carry padding
    text_tokens: int = 320  # length of the text prompt the latent stands in for
    decode_tokens: int = 16  # greedy tokens generated after each prefill (decode latency)
    warmup: int = 3
    iters: int = 5
    phases: list[Phase] = field(default_factory=lambda: ["ceiling", "step", "eval"])
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    attn: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    compile: bool = False  # torch.compile the receivers for (a) and (b); eval stays eager
    nf4: bool = False  # 4-bit NF4 decoder weights (bitsandbytes, CUDA only)
    seed: int = 0
    run: LatentRunArgs = field(default_factory=LatentRunArgs)

    def validate(self) -> None:
        for key in ("batch_size", "slots", "answer_tokens", "text_tokens", "decode_tokens", "iters"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.answer_tokens < 2:
            raise ValueError("answer_tokens: must be >= 2 (one answer token plus end-of-answer)")
        if not 0 <= self.answer_spread <= self.answer_tokens - 2:
            raise ValueError(f"answer_spread: must be in [0, answer_tokens - 2], got {self.answer_spread}")
        if self.warmup < 0:
            raise ValueError(f"warmup: must be >= 0, got {self.warmup}")
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models: need at least one family, each once; got {self.models}")
        if not self.phases or len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases: need at least one phase, each once; got {self.phases}")
        if self.slots <= self.run.latent.n_private:
            raise ValueError(
                f"slots: {self.slots} must exceed run.latent.n_private ({self.run.latent.n_private}); "
                "the bench sets n_shared = slots - n_private"
            )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on CUDA, fp32 elsewhere (as registry models load)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


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
    fast = [dataclasses.replace(lm, model=torch.compile(lm.model)) for lm in lms] if args.compile else lms
    sync(device)
    result: dict = {
        "device": device_info(device),
        "dtype": str(dtype).removeprefix("torch."),
        "settings": {**to_dict(args), "run": to_dict(run)},
        "models": {lm.spec.name: model_info(lm) for lm in lms},
        "layout": layout_info(lms, run, examples, args.slots),
        "build_s": time.perf_counter() - t_start,
    }
    if "ceiling" in args.phases:
        result["ceiling"] = measure_ceiling(fast, run, examples, args, device, minimal=True)
        result["ceiling_full_prompt"] = measure_ceiling(fast, run, examples, args, device, minimal=False)
    if "step" in args.phases:
        result["step"] = measure_step(fast, il, run, examples, args, device)
    if "eval" in args.phases:
        result["eval"] = {lm.spec.name: measure_eval(lm, il, run, examples, args, device) for lm in lms}
    result["ratios"] = ratios(result)
    result["targets"] = {
        k: {"target": v, "value": result["ratios"].get(k), "met": _met(result["ratios"].get(k), v)}
        for k, v in TARGETS.items()
    }
    result["total_s"] = time.perf_counter() - t_start
    return result


# --- (a) ceiling ------------------------------------------------------------------------------


def measure_ceiling(
    lms: list[LoadedModel],
    run: LatentRunArgs,
    examples: list[dict],
    args: BenchArgs,
    device: torch.device,
    minimal: bool = True,
) -> dict:
    """Bare forward + backward to a leaf per receiver, then all receivers in sequence."""
    reset_peak(device)
    passes = {lm.spec.name: _ceiling_pass(lm, run, examples, args.slots, minimal) for lm in lms}
    out = {
        n: summarize_times(timed(f, args.warmup, args.iters, device), args.batch_size)
        for n, f in passes.items()
    }
    out["all"] = summarize_times(
        timed(lambda: [f() for f in passes.values()], args.warmup, args.iters, device), args.batch_size
    )
    out["all"]["peak_memory_gb"] = peak_gb(device)
    return out


def _ceiling_pass(
    lm: LoadedModel, run: LatentRunArgs, examples: list[dict], slots: int, minimal: bool = True
) -> Callable[[], None]:
    """A closure running one bare step of ``lm``: minimal, the Z-dependent columns
    (M + S_suf + A) after the cached scaffold head; else the whole row (T_p + A columns)."""
    head = _scaffold_head(lm, run, examples)  # S_pre ids, the same for every row
    T_p = _latent_prompt_len(lm, run, examples, slots) - (len(head) if minimal else 0)
    gold = pad_answers(_golds(lm, run, examples), lm.device)  # (B, A)
    B, A = gold.shape
    d = lm.model.get_input_embeddings().weight.shape[1]
    x0 = torch.randn(B, T_p + A, d, device=lm.device, dtype=lm.dtype) * 0.02  # (B, T_p + A, d)
    positions = torch.arange(T_p + A, device=lm.device).expand(B, -1)  # (B, T_p + A)
    prefix = scaffold_prefix(lm.model, head, B) if minimal else None  # computed once, outside the step
    if minimal and prefix is None:
        raise ValueError(
            f"{lm.spec.name}: no cached scaffold for the minimal ceiling (a trainable receiver?)"
        )

    def step() -> None:
        x = x0.detach().requires_grad_(True)  # the soft-prefix leaf: the only thing that gets a grad
        batch = Batch(x, None, positions, T_p, gold)  # no mask: every row is full length
        kw = {}
        if prefix is not None:  # mask and positions extended by S_pre, a fresh cache of the head
            batch = dataclasses.replace(batch, attention_mask=torch.ones_like(positions))
            batch, kw = with_prefix(lm.model, batch, prefix)
        with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
            logits = answer_logits(lm.model, batch, **kw)  # (B, A, V) float32
        masked_ce(logits, gold).backward()

    return step


# --- (b) the real step ------------------------------------------------------------------------


def measure_step(
    lms: list[LoadedModel],
    il: Interlingua,
    run: LatentRunArgs,
    examples: list[dict],
    args: BenchArgs,
    device: torch.device,
) -> dict:
    """Time :func:`latentwire.training.step.train_step` (all receivers, optimizer included) on one batch."""
    params = il.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=run.train.lr, weight_decay=run.train.weight_decay)
    il.train()
    records: list[dict] = []
    reset_peak(device)

    def step() -> None:
        records.append(train_step(lms, il, run, examples, params, opt))

    times = timed(step, args.warmup, args.iters, device)
    out = {"all": summarize_times(times, args.batch_size)}
    out["all"]["peak_memory_gb"] = peak_gb(device)
    out["record"] = records[-1]  # losses of the last step: finite numbers say the step is real
    out["trainable_parameters"] = sum(p.numel() for p in params)
    return out


# --- (c) evaluation latency -------------------------------------------------------------------


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
            prompts, _, prefix = make(views)  # prefix: the cached scaffold head (and a deep prefix)
            batch, kw = with_prefix(lm.model, collate(lm.model, prompts), prefix)
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
            "prefill": summarize_times(prefill, args.batch_size),
            "prepare_plus_prefill": summarize_times([a + b for a, b in zip(prep, prefill)], args.batch_size),
            "decode_per_token": summarize_times(decode),
        }
    il.train()
    return out


# --- records ----------------------------------------------------------------------------------


def ratios(result: dict) -> dict:
    """(b)/(a) throughput and text/latent prefill ratios (the smallest over receivers, and each)."""
    out: dict = {}
    if "ceiling" in result and "step" in result:
        out["step_over_ceiling"] = result["ceiling"]["all"]["median_ms"] / result["step"]["all"]["median_ms"]
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


def layout_info(lms: list[LoadedModel], run: LatentRunArgs, examples: list[dict], slots: int) -> dict:
    """Token counts of the benchmark batch, per receiver."""
    out: dict = {"batch_size": len(examples), "slots": slots, "per_model": {}}
    for lm in lms:
        chat = lm.uses_chat_template
        own = prompt_for(lm.spec, run.prompt)
        text = [len(build_prompt(model_view(e), lm.tokenizer, own, chat, "text").ids) for e in examples]
        T_p = _latent_prompt_len(lm, run, examples, slots)
        out["per_model"][lm.spec.name] = {
            "scaffold_tokens": T_p - slots,
            "cached_scaffold_tokens": len(_scaffold_head(lm, run, examples)),  # S_pre: read from the cache
            "latent_prompt_tokens": T_p,
            "text_prompt_tokens_max": max(text),
            "text_prompt_tokens_min": min(text),
            "answer_tokens_max": max(len(g) for g in _golds(lm, run, examples)),
            "answer_tokens_min": min(len(g) for g in _golds(lm, run, examples)),
        }
    return out


def model_info(lm: LoadedModel) -> dict:
    cfg = lm.model.config
    return {
        "family": lm.spec.family,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "hidden_size": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size,
        "attn_implementation": cfg._attn_implementation,
        "quantization": lm.spec.quantization,
    }


# --- helpers ----------------------------------------------------------------------------------


def _latent_prompt_len(lm: LoadedModel, run: LatentRunArgs, examples: list[dict], slots: int) -> int:
    """T_p: the longest latent prompt (scaffold + M) of the batch for ``lm``."""
    chat = lm.uses_chat_template
    own = prompt_for(lm.spec, run.prompt)
    ps = [build_prompt(model_view(e), lm.tokenizer, own, chat, "latent") for e in examples]
    return max(len(p.prefix) + len(p.suffix) for p in ps) + slots


def _scaffold_head(lm: LoadedModel, run: LatentRunArgs, examples: list[dict]) -> list[int]:
    """The scaffold's head (S_pre ids) every latent prompt of the batch starts with."""
    own = prompt_for(lm.spec, run.prompt)
    heads = [
        build_prompt(model_view(e), lm.tokenizer, own, lm.uses_chat_template, "latent").prefix
        for e in examples
    ]
    head = shared_scaffold(heads)
    if head is None:
        raise ValueError(f"{lm.spec.name}: the batch's latent prompts do not share one scaffold head")
    return head


def _golds(lm: LoadedModel, run: LatentRunArgs, examples: list[dict]) -> list[list[int]]:
    eos = eos_id(lm.tokenizer, lm.spec.eos_token)
    own = prompt_for(lm.spec, run.prompt)
    return [answer_ids(e["answers"][0], lm.tokenizer, own, lm.uses_chat_template, eos) for e in examples]


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else bool(value >= target)
