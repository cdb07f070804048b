"""The benchmark batch's token layout per receiver, the receivers' shapes, and the prompt pieces the
phases share (scaffold head, latent prompt length, gold answers)."""

from __future__ import annotations

from latentwire.evaluation.evaluate import model_view
from latentwire.models import LoadedModel
from latentwire.prompt import answer_ids, build_prompt, eos_id, prompt_for
from latentwire.scaffold_cache import shared_scaffold
from latentwire.training.args import LatentRunArgs


def layout_info(lms: list[LoadedModel], run: LatentRunArgs, examples: list[dict], slots: int) -> dict:
    """Token counts of the benchmark batch, per receiver."""
    out: dict = {"batch_size": len(examples), "slots": slots, "per_model": {}}
    for lm in lms:
        chat = lm.uses_chat_template
        own = prompt_for(lm.spec, run.prompt)
        text = [len(build_prompt(model_view(e), lm.tokenizer, own, chat, "text").ids) for e in examples]
        T_p = latent_prompt_len(lm, run, examples, slots)
        out["per_model"][lm.spec.name] = {
            "scaffold_tokens": T_p - slots,
            "cached_scaffold_tokens": len(scaffold_head(lm, run, examples)),  # S_pre: read from the cache
            "latent_prompt_tokens": T_p,
            "text_prompt_tokens_max": max(text),
            "text_prompt_tokens_min": min(text),
            "answer_tokens_max": max(len(g) for g in gold_ids(lm, run, examples)),
            "answer_tokens_min": min(len(g) for g in gold_ids(lm, run, examples)),
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


def latent_prompt_len(lm: LoadedModel, run: LatentRunArgs, examples: list[dict], slots: int) -> int:
    """T_p: the longest latent prompt (scaffold + M) of the batch for ``lm``."""
    chat = lm.uses_chat_template
    own = prompt_for(lm.spec, run.prompt)
    ps = [build_prompt(model_view(e), lm.tokenizer, own, chat, "latent") for e in examples]
    return max(len(p.prefix) + len(p.suffix) for p in ps) + slots


def scaffold_head(lm: LoadedModel, run: LatentRunArgs, examples: list[dict]) -> list[int]:
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


def gold_ids(lm: LoadedModel, run: LatentRunArgs, examples: list[dict]) -> list[list[int]]:
    eos = eos_id(lm.tokenizer, lm.spec.eos_token)
    own = prompt_for(lm.spec, run.prompt)
    return [answer_ids(e["answers"][0], lm.tokenizer, own, lm.uses_chat_template, eos) for e in examples]
