"""Build an interlingua for its receivers: the trainable modules sized from the frozen models.

Training, pretraining, extension, evaluation and the benchmark all start from
:func:`build_interlingua` (an evaluation job rebuilds the modules, then loads a checkpoint), so it
lives here rather than in training: evaluation never imports training. :func:`receiver_of` reads
what the interlingua needs to know about one receiver (width, input-embedding RMS, the cache shape
and K/V RMS for a deep prefix or coprocessor); ``adapter.init: source_vocab`` fits each receiver's
adapter skip on the vocabulary it shares with the encoder's source model.
"""

from __future__ import annotations

import logging

import torch

from latentwire.config import ConfigError
from latentwire.encoders import source_model_name
from latentwire.heads.adapters import embedding_rms
from latentwire.heads.deep_prefix import kv_shape
from latentwire.heads.lora import apply_lora
from latentwire.heads.vocab_align import shared_vocab_map
from latentwire.kv_prefix import kv_rms
from latentwire.latent.interlingua import Interlingua, LatentArgs, Receiver
from latentwire.models import LoadedModel
from latentwire.models.embed_scale import input_embed_scale
from latentwire.prompt import PromptArgs, build_prompt

log = logging.getLogger(__name__)


def build_interlingua(
    args: LatentArgs,
    lms: list[LoadedModel],
    device: torch.device,
    sources: list[LoadedModel] | None = None,
    private_of: dict[str, str] | None = None,
) -> Interlingua:
    """The trainable modules, sized for the receivers (width, input-embedding RMS, cache shape and
    K/V RMS for the deep prefix); with ``args.lora.rank`` > 0, LoRA is injected into each receiver
    (once) and attached, so it trains and is saved with the interlingua. ``sources``: loaded models
    that are not receivers but that the encoder reads (its ``source_model``). ``private_of``: see
    :class:`Interlingua` (receivers added to a trained wire)."""
    receivers = {lm.spec.name: receiver_of(lm, args) for lm in lms}
    models = {lm.spec.name: lm for lm in [*lms, *(sources or [])]}
    il = Interlingua(args, receivers, models, private_of).to(device)
    if args.shallow and args.adapter.init == "source_vocab":
        _align_adapters_to_source(il, args, lms, models)
    if args.lora.rank:
        for lm in lms:
            apply_lora(lm.model, args.lora)
            il.attach_lora(lm.spec.name, lm.model)
    return il


def _align_adapters_to_source(
    il: Interlingua, args: LatentArgs, lms: list[LoadedModel], models: dict
) -> None:
    """``adapter.init: source_vocab``: each receiver other than the encoder's source model starts its
    skip as the shared-vocabulary least-squares map from the source's embedding space (Z's space at
    init, hence the checks) into its own; the source receiver keeps the identity."""
    enc = args.encoder
    src_name = source_model_name(enc)
    if (
        src_name is None
        or enc.name != "select"
        or enc.select_features != "embed"
        or args.adapter.kind != "mlp"
    ):
        raise ConfigError(
            "adapter.init source_vocab: needs adapter.kind mlp and encoder select with select_features: embed"
        )
    src = models[src_name]
    src_emb = src.model.get_input_embeddings().weight
    if enc.d_z != src_emb.shape[1]:
        raise ConfigError(
            f"adapter.init source_vocab: encoder.d_z must equal {src_name}'s width {src_emb.shape[1]}"
        )
    for lm in lms:
        if lm.spec.name == src_name:
            continue
        w, n = shared_vocab_map(src.tokenizer, src_emb, lm.tokenizer, lm.model.get_input_embeddings().weight)
        skip = il.adapter(lm.spec.name).body.skip  # Linear(d_z, d_model): weight (d_model, d_z)
        with torch.no_grad():
            skip.weight.copy_(w.T.to(skip.weight))
        log.info("adapter %s: skip fitted on %d token strings shared with %s", lm.spec.name, n, src_name)


def receiver_of(lm: LoadedModel, args: LatentArgs) -> Receiver:
    """What the interlingua needs to know about ``lm``; K/V statistics only when the deep prefix is on."""
    emb = lm.model.get_input_embeddings().weight
    kv = None
    if args.deep_prefix.enabled or args.coprocessor.enabled:
        # calibration text: the prompt contract's own scaffold, real tokens the model always sees
        p = build_prompt(
            {"question": "Who?", "context": "Here."}, lm.tokenizer, PromptArgs(), lm.uses_chat_template
        )
        k_rms, v_rms = kv_rms(lm.model, torch.tensor([p.ids], device=lm.device))
        kv = kv_shape(lm.model, k_rms, v_rms)
    return Receiver(emb.shape[1], embedding_rms(emb, input_embed_scale(lm)), kv)
