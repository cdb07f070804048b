"""Latent prompts: the prompt contract's real scaffold around a receiver's soft tokens.

``prefix ids → embeddings | adapter(Z) | suffix ids → embeddings``: the chat header, system prompt
and answer anchor stay real tokens; the soft tokens stand exactly where the content would be.
Controls reuse the same path with Z replaced: ``shuffled`` (another example's Z, a cyclic shift of
the batch) and ``zero`` (Z = 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from latentwire.batching import embed_ids
from latentwire.evaluate import PromptMaker
from latentwire.interlingua import Interlingua
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, build_prompt

Control = Literal["none", "shuffled", "zero"]


def latent_prompts(
    lm: LoadedModel,
    interlingua: Interlingua,
    prompt_args: PromptArgs,
    views: list[dict],
    z: torch.Tensor,
) -> list[torch.Tensor]:
    """Per-example prompt embeddings (T_i, d) with Z's soft tokens in the content slot."""
    soft = interlingua.soft_tokens(z, lm.spec.name).to(lm.dtype)  # (B, S, d)
    # When the latent replaces question + context, the scaffold is the same for every example:
    # render and embed it once per batch (the chat template is the slow part of a training step).
    shared = prompt_args.replaces == "question_context"
    out, scaffold = [], None
    for i, v in enumerate(views):
        if scaffold is None or not shared:
            p = build_prompt(v, lm.tokenizer, prompt_args, lm.uses_chat_template, "latent")
            scaffold = (embed_ids(lm.model, p.prefix, lm.device), embed_ids(lm.model, p.suffix, lm.device))
        pre, suf = scaffold
        out.append(torch.cat([pre, soft[i], suf], dim=0))  # (T_i, d)
    return out


def donor_map(examples: list[dict]) -> dict[tuple[str, str], dict]:
    """For the shuffled control: each example's donor is the next example of the whole eval list."""
    keys = [(e["question"], e["context"]) for e in examples]
    return {
        k: {"question": keys[(i + 1) % len(keys)][0], "context": keys[(i + 1) % len(keys)][1]}
        for i, k in enumerate(keys)
    }


def latent_prompt_maker(
    lm: LoadedModel,
    interlingua: Interlingua,
    prompt_args: PromptArgs,
    control: Control = "none",
    z_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    donors: dict[tuple[str, str], dict] | None = None,
) -> PromptMaker:
    """Prompt maker for evaluation.

    ``z_transform`` (e.g. a quantize/dequantize round trip) is applied to Z. Control ``shuffled``
    encodes each example's donor (``donors``, from :func:`donor_map`) instead of the example;
    ``zero`` sends Z = 0. Facts record positions and payload bytes (fp16 Z on the wire).
    """
    n_models = len(interlingua.names)
    total = interlingua.args.total_slots(n_models)
    d_z = interlingua.args.encoder.d_z
    if control == "shuffled" and not donors:
        raise ValueError("the shuffled control needs donors (see donor_map)")

    def make(views: list[dict]) -> tuple[list[torch.Tensor], list[dict]]:
        sources = [donors[(v["question"], v["context"])] for v in views] if control == "shuffled" else views
        texts = [
            build_prompt(v, lm.tokenizer, prompt_args, lm.uses_chat_template, "latent").content_text
            for v in sources
        ]
        z = interlingua.encode(texts)  # (B, M, d_z)
        if z_transform is not None:
            z = z_transform(z)
        if control == "zero":
            z = torch.zeros_like(z)
        prompts = latent_prompts(lm, interlingua, prompt_args, views, z)
        facts = []
        for v, p in zip(views, prompts):
            full = build_prompt(v, lm.tokenizer, prompt_args, lm.uses_chat_template, "text")
            facts.append(
                {
                    "prompt_tokens": p.shape[0],
                    "content_positions": interlingua.args.read_slots(),
                    "text_content_tokens": len(full.content),
                    "payload_bytes": total * d_z * 2,  # fp16 wire format; see payload.py for others
                    "text_bytes": len(full.content_text.encode("utf-8")),
                }
            )
        return prompts, facts

    return make
