"""Encoders that read the text through a frozen registry LLM (``source_model``): ``embed``, ``lm-hidden``.

Notation: B batch, T source-model tokens (valid first, then padding), d source-model width,
W slots, d_z latent width.

Both tokenise the text with the source model's own tokenizer, map each token to a d_z feature,
and pool the T features into W slots with ``pooling`` (:data:`POOLERS`: contiguous block means or
learned-query cross-attention), which ends in a LayerNorm. The source model is reached through a
:class:`SourceReader` (plain object, see source.py), so it never enters a checkpoint; features are
cast to float32 before any trainable part, so a bf16 source model on CUDA works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels
from latentwire.encoders.pooling import POOLERS
from latentwire.encoders.source import SourceReader, build_trunk, get_source_model, lora_parameters


def _token_proj(d_src: int, d_z: int) -> nn.Module:
    """LayerNorm then Linear, per token: (B, T, d) → (B, T, d_z).

    Why the LayerNorm first: embedding tables and residual streams differ in scale by orders of
    magnitude between models, and a few residual dimensions carry outliers hundreds of times the
    typical size; normalising each token first gives the projection the same footing everywhere.
    """
    return nn.Sequential(nn.LayerNorm(d_src), nn.Linear(d_src, d_z))


@ENCODERS.register("embed")
class EmbedEncoder(EncoderDefaults, nn.Module):
    """Frozen input embeddings of ``source_model`` → projection + learned positions → small
    Transformer (``n_layers``, ``n_heads``) → ``pooling`` → Z (B, W, d_z).

    The table gives context-free token vectors in a space the source model understands; the small
    Transformer is the only contextualisation, so this isolates what the LLM's vocabulary (rather
    than its layers) contributes.
    """

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        lm = get_source_model(args, models or {})
        self.source = SourceReader(lm, args.max_enc_tokens)
        d, d_src = args.d_z, lm.model.get_input_embeddings().weight.shape[1]
        self.wire_slots, self.d_z = wire_slots, d
        self.token_proj = _token_proj(d_src, d)
        self.pos_emb = nn.Parameter(torch.randn(args.max_enc_tokens, d) * 0.02)  # (T_max, d_z)
        layer = nn.TransformerEncoderLayer(
            d, args.n_heads, 4 * d, args.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # Nested tensors would change which kernels run for padded vs unpadded batches.
        self.body = nn.TransformerEncoder(
            layer, args.n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.pool = POOLERS.get(args.pooling)(d, wire_slots, args.n_heads, args.dropout, args.slot_locality)
        # Empty, unsaved buffer: follows .to(device), so it tells us where the trainable parts live.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.source.tokenize(texts)  # (B, T) each, on the source model's device
        e = self.source.embed(ids).float().to(self.anchor.device)  # (B, T, d)
        mask = mask.to(self.anchor.device)
        x = self.token_proj(e) + self.pos_emb[: ids.shape[1]]  # (B, T, d_z)
        x = self.body(x, src_key_padding_mask=~mask)  # (B, T, d_z)
        return self.pool(x, mask)  # (B, W, d_z)


@ENCODERS.register("lm-hidden")
class HiddenStateEncoder(EncoderDefaults, nn.Module):
    """Hidden states of layer ``source_layer`` of ``source_model`` → LN + projection → ``pooling``
    → Z (B, W, d_z). Only the layers up to ``source_layer`` run.

    With ``lora_rank`` > 0 the layers that run carry LoRA (see :func:`build_trunk`); its tensors
    are registered here under ``lora.*``, so they train and are checkpointed while the base weights
    stay frozen and shared with the rest of the program.
    """

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        lm = get_source_model(args, models or {})
        trunk = build_trunk(lm, args.source_layer, args.lora_rank)
        lora = lora_parameters(trunk)
        self.source = SourceReader(lm, args.max_enc_tokens, trunk, has_lora=bool(lora))
        # The same Parameter objects as in the trunk: training and load_state_dict update both.
        self.lora = nn.ParameterDict({k.replace(".", "_"): p for k, p in lora.items()})
        if len(self.lora) != len(lora):
            raise ValueError("LoRA parameter names collide once dots become '_'")
        d, d_src = args.d_z, lm.model.get_input_embeddings().weight.shape[1]
        self.wire_slots, self.d_z = wire_slots, d
        self.token_proj = _token_proj(d_src, d)
        self.pool = POOLERS.get(args.pooling)(d, wire_slots, args.n_heads, args.dropout, args.slot_locality)
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.source.tokenize(texts)  # (B, T) each, on the source model's device
        h = self.source.hidden(ids, mask)  # (B, T, d), model dtype
        mask = mask.to(self.anchor.device)
        x = self.token_proj(h.float().to(self.anchor.device))  # (B, T, d_z)
        return self.pool(x, mask)  # (B, W, d_z)
