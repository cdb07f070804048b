"""``pooled-lm``: a genuinely compressive encoder on a registry LLM, ARC-Encoder style.

Notation: B batch, T source-model tokens (valid first, then padding), L one text's length,
d source-model width, W slots (the encoder's ``wire_slots``, the cap), g group size, d_z latent width,
H_q / H_kv query / key-value heads, D head dim.

Recipe (Pilchen et al., arXiv 2510.20535, kyutai-labs/ARC-Encoder), in our terms:

1. The source model's decoder with its last ``drop_last`` layers removed (n - drop_last = k kept).
2. Attention over the text is **non-causal** with ``bidirectional`` (every token reads every token
   of its text), else the model's own causal mask; padding is never read.
3. The trunk trains: the top ``train_layers`` kept layers are *copies* (float32 master weights,
   fully fine-tuned, -1 = all k); the layers below share the source model's frozen weights and,
   with ``lora_rank`` > 0, carry the encoder's LoRA. The embedding table stays frozen and shared.
4. **Pooling only in the last kept block.** Its input h (B, T, d) is mean-pooled over contiguous
   groups of g tokens into (B, W, d); those pooled vectors are the block's queries and residual
   stream, while keys/values come from all T un-pooled tokens of the same block. With
   ``pool_mode: factor`` g = max(pool_factor, ⌈L / W⌉) so a text fills ⌈L / g⌉ ≤ W slots and the
   rest are a learned pad vector (fixed W = the cap on the wire, see docs); ``fixed`` always uses W
   nearly equal groups (the block means of ``pooling.block_pool``). A pooled query sits at the mean
   position of its group (RoPE), and under a causal mask it reads keys up to its group's last token.
5. Z = Linear_{d→d_z}(RMSNorm(out)) (the projection is the identity when d_z == d), float32.
6. Optionally **question-conditioned** (``question_template``, e.g. ``"Question: {question}\n"``):
   the question's tokens go in front of the content's, every layer (and every pooled query) reads
   them, but no slot pools them: groups, filled slots and payload count content tokens only, so
   Z still has ⌈L / g⌉ slots of the content and the question is not sent a second time. Without
   questions (pretraining on plain text) the encoder reads the content alone.

Each receiver then reads Z through its own projector (``adapter.kind: linear2``: two linear layers,
no activation). Non-trainable parts never enter ``state_dict``: the frozen layers live in a plain
holder, as in source.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels
from latentwire.encoders.source import LORA_ADAPTER, _unwrap_adapters, get_source_model, tokenize


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(…, D) → (…, D): the RoPE rotation partner of each pair of halves (Llama/Qwen convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def group_bounds(lengths: torch.Tensor, wire_slots: int, factor: int, mode: str) -> tuple[torch.Tensor, ...]:
    """Token group of every slot: start (B, W), end (B, W) exclusive, valid (B, W) bool.

    lengths (B,) long. ``factor``: groups of g = max(factor, ⌈L / W⌉) tokens, slot m valid iff it
    starts inside the text (⌈L / g⌉ valid slots). ``fixed``: W nearly equal non-empty groups
    [⌊mL/W⌋, max(⌊(m+1)L/W⌋, start + 1)), all valid (tokens repeat when L < W).
    """
    L = lengths.unsqueeze(1)  # (B, 1)
    m = torch.arange(wire_slots, device=lengths.device).unsqueeze(0)  # (1, W)
    if mode == "fixed":
        start = torch.div(m * L, wire_slots, rounding_mode="floor")
        end = torch.maximum(torch.div((m + 1) * L, wire_slots, rounding_mode="floor"), start + 1)
        return start, end, torch.ones_like(start, dtype=torch.bool)
    g = torch.clamp(torch.div(L + wire_slots - 1, wire_slots, rounding_mode="floor"), min=factor)  # (B, 1)
    start = m * g
    return start, torch.minimum(start + g, L), start < L


def group_weights(
    mask: torch.Tensor, wire_slots: int, factor: int, mode: str, offset: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Mean-pooling weights w (B, W, T) float32 (each slot's row sums to 1 over its group's text
    tokens; 0 for a slot past the text), with start, end (B, W) and valid (B, W) of group_bounds.

    ``offset`` (B,) long: per row, the leading tokens that no group pools (a question prefix); the
    groups cover tokens [offset, mask.sum(1)) and start / end are absolute positions."""
    off = torch.zeros_like(mask[:, 0], dtype=torch.long) if offset is None else offset  # (B,)
    start, end, valid = group_bounds(mask.sum(1) - off, wire_slots, factor, mode)  # (B, W), content-relative
    start, end = start + off[:, None], end + off[:, None]  # (B, W) absolute
    t = torch.arange(mask.shape[1], device=mask.device)
    w = ((t >= start[..., None]) & (t < end[..., None]) & mask[:, None, :]).float()  # (B, W, T)
    return w / w.sum(-1, keepdim=True).clamp(min=1), start, end, valid


def n_groups(length: int, wire_slots: int, factor: int, mode: str) -> int:
    """Slots a text of ``length`` tokens fills (W for ``fixed``; ⌈L / g⌉ for ``factor``)."""
    if mode == "fixed":
        return wire_slots
    g = max(factor, math.ceil(length / wire_slots))
    return math.ceil(length / g)


def prepend(
    pre_ids: torch.Tensor, pre_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's prefix tokens then its content tokens, right-padded: ids (B, T'), mask (B, T')
    bool, and the prefix lengths (B,) long (the ``offset`` of :func:`group_weights`)."""
    lp, lc = pre_mask.sum(1), mask.sum(1)  # (B,)
    out = torch.zeros(ids.shape[0], int((lp + lc).max()), dtype=ids.dtype, device=ids.device)
    out_mask = torch.zeros(out.shape, dtype=torch.bool, device=ids.device)
    for i, (p, c) in enumerate(zip(lp.tolist(), lc.tolist())):
        out[i, :p], out[i, p : p + c] = pre_ids[i, :p], ids[i, :c]
        out_mask[i, : p + c] = True
    return out, out_mask, lp


@dataclass(frozen=True)
class _Frozen:
    """Plain holder (never a submodule) of the frozen, weight-sharing part of the trunk."""

    layers: nn.ModuleList  # the kept layers below the fully fine-tuned ones (may carry LoRA)
    rotary: nn.Module  # the decoder's rotary embedding
    embed: nn.Module  # the frozen input-embedding table
    tokenizer: object
    attn_impl: str


@ENCODERS.register("pooled-lm")
class PooledLMEncoder(EncoderDefaults, nn.Module):
    """Source-model trunk with a pooled last block (see module docstring): list[str] → (B, W, d_z)."""

    fills_partially = True  # factor mode: a text of L tokens fills ⌈L / g⌉ ≤ W slots
    pools = True  # pool_factor groups tokens per slot in the last block

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        lm = get_source_model(args, models or {})
        decoder = lm.model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if not isinstance(layers, nn.ModuleList) or not hasattr(decoder, "rotary_emb"):
            raise ValueError(
                f"pooled-lm: {lm.spec.name!r} needs a Llama/Qwen-style decoder (layers, rotary_emb)"
            )
        k = len(layers) - args.drop_last
        if k < 1:
            raise ValueError(f"pooled-lm: drop_last {args.drop_last} leaves no layer of {len(layers)}")
        n_full = k if args.train_layers < 0 else min(args.train_layers, k)
        # structural copy whose parameters are the model's own tensors (see source.build_trunk)
        trunk = copy.deepcopy(decoder, memo={id(p): p for p in decoder.parameters()})
        _unwrap_adapters(trunk)
        kept = list(trunk.layers)[:k]
        frozen = nn.ModuleList(kept[: k - n_full])
        for p in frozen.parameters():
            p.requires_grad_(False)
        lora: dict[str, nn.Parameter] = {}
        if args.lora_rank and len(frozen):
            from peft import LoraConfig, inject_adapter_in_model

            cfg = LoraConfig(
                r=args.lora_rank, lora_alpha=args.lora_rank, lora_dropout=0.0, target_modules="all-linear"
            )
            holder = nn.Module()
            holder.layers = frozen
            inject_adapter_in_model(cfg, holder, adapter_name=LORA_ADAPTER)
            for n_, p in holder.named_parameters():
                if f".{LORA_ADAPTER}." in n_ and "lora_" in n_:
                    p.data = p.data.float()  # float32 master weights, as in source.build_trunk
                    p.requires_grad_(True)
                    lora[n_.replace(".", "_")] = p
        # Fully fine-tuned layers: real copies (no memo), float32 master weights, registered here.
        self.top = nn.ModuleList(
            [copy.deepcopy(layer).float().requires_grad_(True) for layer in kept[k - n_full :]]
        )
        self.lora = nn.ParameterDict(lora)  # the same Parameter objects as in the frozen layers
        impl = getattr(lm.model.config, "_attn_implementation", "eager") or "eager"
        self.source = _Frozen(frozen, trunk.rotary_emb, lm.model.get_input_embeddings(), lm.tokenizer, impl)
        d = self.source.embed.weight.shape[1]
        self.out_norm = copy.deepcopy(decoder.norm).float().requires_grad_(True)  # RMSNorm of the model
        self.proj = nn.Identity() if args.d_z == d else nn.Linear(d, args.d_z)
        self.pad = nn.Parameter(torch.zeros(args.d_z))  # (d_z,) slots past a short text's last group
        self.wire_slots, self.d_z, self.max_tokens = wire_slots, args.d_z, args.max_enc_tokens
        self.bidirectional, self.factor, self.mode = args.bidirectional, args.pool_factor, args.pool_mode
        self.question_template, self.max_question_tokens = args.question_template, args.max_question_tokens
        self.reads_questions = bool(args.question_template)  # Interlingua.encode passes the questions
        self.last_stats: dict[str, float] = {}
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        shared = [
            p for p in frozen.parameters() if p.requires_grad and id(p) not in {id(q) for q in lora.values()}
        ]
        assert not shared, "source model weights must stay frozen"

    @property
    def device(self) -> torch.device:
        return self.source.embed.weight.device

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids (B, T) and mask (B, T) bool, right-padded, on the source model's device."""
        ids, mask = tokenize(self.source.tokenizer, list(texts), self.max_tokens)
        return ids.to(self.device), mask.to(self.device)

    def slot_groups(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which tokens each slot pools: ids (B, T), weights (B, W, T), valid (B, W) (heads.regress_init)."""
        ids, mask = self.tokenize(texts)
        w, _, _, valid = group_weights(mask, self.wire_slots, self.factor, self.mode)
        return ids, w, valid

    def filled_slots(self, texts: Sequence[str]) -> list[int]:
        """Per text, the leading slots its token groups fill (≥ 1; ``fixed`` mode: all W). The rest
        hold the learned pad vector; ``latent.trim_pad`` sends and reads only the filled ones."""
        _, mask = tokenize(self.source.tokenizer, list(texts), self.max_tokens)
        return [
            max(1, n_groups(int(n), self.wire_slots, self.factor, self.mode)) for n in mask.sum(1).tolist()
        ]

    def slot_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's valid slots as character spans [start, end) of the tokens they pool, in the
        order of ``slot_groups``' valid mask (heads.regress_init reads them in another tokenizer)."""
        ids, mask, offsets = tokenize(self.source.tokenizer, list(texts), self.max_tokens, offsets=True)
        start, end, valid = group_bounds(mask.sum(1), self.wire_slots, self.factor, self.mode)  # (B, W)
        return [
            [(o[a][0], o[b - 1][1]) for a, b, v in zip(s_, e_, v_) if v]
            for o, s_, e_, v_ in zip(offsets, start.tolist(), end.tolist(), valid.tolist())
        ]

    def forward(self, texts: list[str], questions: Sequence[str] | None = None) -> torch.Tensor:
        """Z (B, W, d_z) float32 for the texts; with ``question_template`` and ``questions``, each
        text is read after its question (module docstring, point 6)."""
        if not (self.reads_questions and questions is not None):
            ids, mask = self.tokenize(texts)  # (B, T)
            offset = None
        else:
            if len(questions) != len(texts):
                raise ValueError(f"pooled-lm: {len(questions)} questions for {len(texts)} texts")
            prefixes = [self.question_template.format(question=q.strip()) for q in questions]
            q_ids, q_mask = tokenize(self.source.tokenizer, prefixes, self.max_question_tokens)  # CPU
            c_ids, c_mask = tokenize(self.source.tokenizer, list(texts), self.max_tokens)  # CPU, content
            ids, mask, offset = (x.to(self.device) for x in prepend(q_ids, q_mask, c_ids, c_mask))
        with torch.no_grad():
            e = self.source.embed(ids)  # (B, T, d), frozen table, model dtype
        return self.encode_embeds(e, mask, offset)

    def _mask(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A (B, 1, Q, T) bool "may attend" mask in the form the layers' attention expects."""
        if self.source.attn_impl == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def encode_embeds(
        self, e: torch.Tensor, mask: torch.Tensor, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Z (B, W, d_z) float32 from input embeddings e (B, T, d) and mask (B, T) bool (valid first);
        ``offset`` (B,): leading tokens every layer reads but no slot pools (the question prefix).

        Gradients reach e when it requires grad (tests use that to check what each slot reads).
        """
        B, T, _ = e.shape
        cuda = e.device.type == "cuda"
        pos = torch.arange(T, device=e.device).expand(B, T)  # (B, T)
        allowed = mask[:, None, None, :].expand(B, 1, T, T)  # (B, 1, T, T): keys that are text
        if not self.bidirectional:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=e.device).tril()
        blocks = [*self.source.layers, *self.top]  # the last one is the pooled block
        n_frozen = len(self.source.layers)
        grad_lower = torch.is_grad_enabled() and (e.requires_grad or len(self.lora) > 0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            h = e
            cos, sin = self.source.rotary(h, pos)  # (B, T, D) each
            am = self._mask(allowed, torch.bfloat16 if cuda else h.dtype)
            for i, layer in enumerate(blocks[:-1]):
                with torch.set_grad_enabled(torch.is_grad_enabled() and (i >= n_frozen or grad_lower)):
                    if i == n_frozen and not cuda:  # float32 master weights from here on
                        h, cos, sin = (x.to(self.out_norm.weight.dtype) for x in (h, cos, sin))
                    h = layer(h, attention_mask=am, position_ids=pos, position_embeddings=(cos, sin))
            if not cuda and self.top:
                h, cos, sin = (x.to(self.out_norm.weight.dtype) for x in (h, cos, sin))
            with torch.set_grad_enabled(torch.is_grad_enabled() and (len(self.top) > 0 or grad_lower)):
                out, valid = self._pooled_block(blocks[-1], h, mask, cos, sin, offset)  # (B, W, d), (B, W)
            z = self.proj(self.out_norm(out.to(self.out_norm.weight.dtype) if not cuda else out)).float()
        self.last_stats = {"filled_slots": float(valid.sum(1).float().mean())}
        return torch.where(valid[..., None], z, self.pad.to(z.dtype))  # (B, W, d_z)

    def _pooled_block(self, layer: nn.Module, h: torch.Tensor, mask: torch.Tensor, cos, sin, offset=None):
        """The last kept decoder layer with pooled queries: h (B, T, d) → (B, W, d), valid (B, W).

        cos, sin (B, T, D): RoPE of the token positions (the keys); the queries get their own.
        offset (B,) or None: the prefix tokens the queries read as keys but do not pool."""
        B, T, d = h.shape
        attn = layer.self_attn
        w, start, end, valid = group_weights(
            mask, self.wire_slots, self.factor, self.mode, offset
        )  # (B, W, T), (B, W)
        t = torch.arange(T, device=h.device)
        # (B, W) mean position of each group, from the float32 weights and elementwise (autocast leaves
        # it float32): bf16 weights of 1/3 are off by 0.2 %, a whole position near token 400, and a
        # bf16 matmul would round positions above 256 to even numbers
        q_pos = (w * t.float()).sum(-1)
        pooled = w.to(h.dtype) @ h  # (B, W, d): the block's queries and residual stream
        x_kv, x_q = layer.input_layernorm(h), layer.input_layernorm(pooled)
        D = attn.head_dim
        q = attn.q_proj(x_q).view(B, self.wire_slots, -1, D)  # (B, W, H_q, D)
        k = attn.k_proj(x_kv).view(B, T, -1, D)  # (B, T, H_kv, D)
        v = attn.v_proj(x_kv).view(B, T, -1, D).transpose(1, 2)  # (B, H_kv, T, D)
        if hasattr(attn, "q_norm"):  # Qwen3-style per-head norms
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, ·, D)
        cq, sq = self.source.rotary(h, q_pos)  # (B, W, D): RoPE at fractional positions
        q = q * cq[:, None].to(q.dtype) + rotate_half(q) * sq[:, None].to(q.dtype)
        k = k * cos[:, None].to(k.dtype) + rotate_half(k) * sin[:, None].to(k.dtype)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H_q, T, D)
        allowed = mask[:, None, :].expand(B, self.wire_slots, T)  # (B, W, T)
        if not self.bidirectional:  # a group reads up to its own last token
            allowed = allowed & (t[None, None, :] < end[..., None])
        o = F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=allowed[:, None], scale=attn.scaling
        )  # (B, H_q, W, D)
        x = pooled + attn.o_proj(o.transpose(1, 2).reshape(B, self.wire_slots, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x, valid
