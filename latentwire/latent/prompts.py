"""Latent prompts: the prompt contract's real scaffold around a receiver's reading of Z.

``prefix ids → embeddings | adapter(Z) | suffix ids → embeddings``: the chat header, system prompt
and answer anchor stay real tokens; the soft tokens stand exactly where the content would be (the
shallow head). With the deep prefix on, Z also becomes per-layer K/V entries in front of the prompt
(:class:`~latentwire.kv_prefix.KVPrefix`); without the shallow head the content slot stays empty.
Controls reuse the same path with Z replaced: ``shuffled`` (another example's Z, a cyclic shift of
the batch) and ``zero`` (Z = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from latentwire.batching import PromptMaker, Prompts, collate, embed_ids
from latentwire.kv_prefix import KVPrefix, from_cache, with_prefix
from latentwire.latent.interlingua import Interlingua
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, build_prompt, content_text, prompt_for
from latentwire.scaffold_cache import scaffold_cache_off, scaffold_prefix

Control = Literal["none", "shuffled", "zero"]


def trim_soft(soft: torch.Tensor, filled: Sequence[int] | None, markers: bool) -> list[torch.Tensor]:
    """Each row's soft tokens, cut to its filled slots (``latent.trim_pad``): soft (B, S(+2), d) →
    [(n_i (+2), d)]; with ``markers`` the begin / end marker rows stay around them. None: all S."""
    if filled is None:
        return list(soft)
    if markers:
        return [torch.cat([s[:1], s[1 : 1 + n], s[-1:]]) for s, n in zip(soft, filled)]
    return [s[:n] for s, n in zip(soft, filled)]


def encode_views(
    interlingua: Interlingua,
    views: Sequence[dict],
    prompt_args: PromptArgs,
    answers: Sequence[list[str]] | None = None,
) -> tuple[torch.Tensor, list[int] | None]:
    """Z (B, W, d_z) of model views and the slots each message fills (None: all): the encoder reads
    each view's content text of ``prompt_args`` and, if it reads questions, the view's question.
    The one place training, evaluation, controls, joint rescoring and the wire fit encode."""
    texts = [content_text(v, prompt_args) for v in views]
    z = interlingua.encode(texts, answers=answers, questions=[v["question"] for v in views])
    return z, interlingua.filled(texts)


def latent_inputs(
    lm: LoadedModel,
    interlingua: Interlingua,
    prompt_args: PromptArgs,
    views: list[dict],
    z: torch.Tensor,
    filled: Sequence[int] | None = None,
) -> tuple[list[torch.Tensor], KVPrefix | None]:
    """Per-example prompt embeddings (T_i, d) with Z's soft tokens in the content slot (if the
    shallow head is on) and the batch's deep K/V prefix (if on). Every training, evaluation and
    rescoring forward builds its inputs here. The scaffold is ``lm``'s prompt (prompt_for).
    ``filled``: per row, the slots its message carries (:meth:`Interlingua.filled`; None: all)."""
    prompt_args = prompt_for(lm.spec, prompt_args)
    reading = interlingua.read(z, lm.spec.name, filled)
    soft = None
    if reading.soft is not None:  # [(S_i, d)]
        soft = trim_soft(reading.soft.to(lm.dtype), filled, interlingua.args.adapter.markers)
    # When the latent replaces question + context, the scaffold is the same for every example:
    # render and embed it once per batch (the chat template is the slow part of a training step),
    # and without a deep prefix read its head from the receiver's scaffold cache (scaffold_cache:
    # computed once, not in every forward and backward). A deep prefix stays in front of the whole
    # scaffold, as it was trained, so its head then stays in the prompt.
    shared = prompt_args.replaces == "question_context"
    prefix = reading.prefix
    out, scaffold, suffix_lens = [], None, []
    for i, v in enumerate(views):
        if scaffold is None or not shared:
            p = build_prompt(v, lm.tokenizer, prompt_args, lm.uses_chat_template, "latent")
            cached = scaffold_prefix(lm.model, p.prefix, len(views)) if shared and prefix is None else None
            pre = None if cached is not None else embed_ids(lm.model, p.prefix, lm.device)
            scaffold = (pre, embed_ids(lm.model, p.suffix, lm.device), cached)
        pre, suf, cached = scaffold
        parts = [t for t in (pre, soft[i] if soft is not None else None, suf) if t is not None]
        out.append(torch.cat(parts, dim=0))  # (T_i, d)
        suffix_lens.append(suf.shape[0])
    if scaffold is not None and scaffold[2] is not None:
        prefix = scaffold[2]  # (B, H_kv, P, D) per layer: the scaffold's head
    if interlingua.args.coprocessor.enabled:
        return _coprocessed(lm, interlingua, out, reading, suffix_lens, prefix)
    return out, prefix


def _coprocessed(
    lm, interlingua, prompts, reading, suffix_lens, prefix
) -> tuple[list[torch.Tensor], KVPrefix]:
    """Phase 1 of the coprocessor reading (see :mod:`latentwire.heads.coprocessor`): run the receiver over
    each prompt up to its soft tokens, add the coprocessor's deltas to the soft tokens' cache entries,
    and return the suffixes as the prompts that continue from that augmented cache."""
    S = reading.soft.shape[1]
    heads = [p[: p.shape[0] - n] for p, n in zip(prompts, suffix_lens)]  # (T_i - suffix, d): ends in soft
    rest = [p[p.shape[0] - n :] for p, n in zip(prompts, suffix_lens)]
    b, kw = with_prefix(lm.model, collate(lm.model, heads), prefix)  # deep prefix or cached scaffold
    use_hidden = interlingua.args.coprocessor.use_hidden
    out = lm.model(
        inputs_embeds=b.inputs_embeds,
        attention_mask=b.attention_mask,
        position_ids=b.position_ids,
        use_cache=True,
        output_hidden_states=use_hidden,
        logits_to_keep=1,
        **kw,
    )
    hidden = out.hidden_states[-1][:, -S:] if use_hidden else None  # (B, S, d_model): left-padded
    cache = from_cache(out.past_key_values, b.attention_mask)
    keys, values = list(cache.keys), list(cache.values)
    for layer, (dk, dv) in interlingua.coprocess(lm.spec.name, reading.slots, hidden).items():
        k, v = keys[layer], values[layer]  # (B, H_kv, P, D); the soft tokens are the last S entries
        keys[layer] = torch.cat([k[:, :, :-S], k[:, :, -S:] + dk.to(k.dtype)], dim=2)
        values[layer] = torch.cat([v[:, :, :-S], v[:, :, -S:] + dv.to(v.dtype)], dim=2)
    return rest, KVPrefix(keys, values, b.attention_mask)


def latent_prompts(
    lm: LoadedModel,
    interlingua: Interlingua,
    prompt_args: PromptArgs,
    views: list[dict],
    z: torch.Tensor,
) -> list[torch.Tensor]:
    """The whole prompt embeddings of :func:`latent_inputs` for a shallow-only interlingua (the
    scaffold in the prompt, not from the cache).

    Refuses a deep prefix rather than silently dropping it."""
    with scaffold_cache_off():
        prompts, prefix = latent_inputs(lm, interlingua, prompt_args, views, z)
    if prefix is not None:
        raise ValueError("this interlingua has a deep prefix: use latent_inputs and pass the prefix on")
    return prompts


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
    ``zero`` sends Z = 0. Facts record positions and payload bytes (fp16 Z on the wire). Returns
    a :class:`~latentwire.batching.Prompts` per batch.

    The encoder reads the content text of the run's ``prompt_args`` (one Z for all receivers, as in
    training); the scaffold and facts use ``lm``'s own prompt (:func:`~latentwire.prompt.prompt_for`).
    """
    own = prompt_for(lm.spec, prompt_args)
    total = interlingua.wire_slots()  # slots over the wire (an extended wire's newcomers add none)
    d_z = interlingua.args.encoder.d_z
    if control == "shuffled" and not donors:
        raise ValueError("the shuffled control needs donors (see donor_map)")

    def make(views: list[dict]) -> Prompts:
        sources = [donors[(v["question"], v["context"])] for v in views] if control == "shuffled" else views
        z, filled = encode_views(interlingua, sources, prompt_args)  # (B, M, d_z); the donor's for shuffled
        if z_transform is not None:
            z = z_transform(z)
        if control == "zero":
            z = torch.zeros_like(z)
        prompts, prefix = latent_inputs(lm, interlingua, prompt_args, views, z, filled)
        # positions attended over before the prompt: the real entries of the prefix, per row
        P = (
            [0] * len(views)
            if prefix is None
            else ([prefix.length] * len(views) if prefix.mask is None else prefix.mask.sum(1).tolist())
        )
        facts = []
        for v, p, n_prefix, n in zip(views, prompts, P, filled or [None] * len(views)):
            full = build_prompt(v, lm.tokenizer, own, lm.uses_chat_template, "text")
            facts.append(
                {
                    "prompt_tokens": p.shape[0] + int(n_prefix),  # every position the receiver attends over
                    "content_positions": interlingua.positions(n),
                    "text_content_tokens": len(full.content),
                    "wire_slots": n or total,  # slots this message sends
                    "payload_bytes": (n or total) * d_z * 2,  # fp16 wire format; see payload.py for others
                    "text_bytes": len(full.content_text.encode("utf-8")),
                }
            )
        return Prompts(prompts, facts, prefix)

    return make
