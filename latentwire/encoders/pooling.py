"""Token states → W slots: contiguous block means and learned-query cross-attention.

Notation: B batch, T tokens (valid ones first, then padding), W slots, d feature width.
``POOLERS`` maps the ``pooling`` config value to a module ``(x (B, T, d), mask (B, T)) → (B, W, d)``;
the encoders that read a language model (lm.py) pick theirs by that name. The MiniLM encoders use
:func:`block_pool` and :class:`QueryPool` directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentwire.encoders.core import slot_attention_bias
from latentwire.registry import Registry

# name -> builder(d, wire_slots, n_heads, dropout, locality) -> module(x, mask) -> (B, W, d)
POOLERS: Registry = Registry("pooling")


def block_pool(states: torch.Tensor, mask: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Mean over ``n_blocks`` contiguous, nearly equal blocks of each example's own tokens.

    states (B, T, H), mask (B, T) with valid tokens first → (B, n_blocks, H). Block m covers
    [floor(m L / W), max(floor((m+1) L / W), start + 1)) of an example of length L, so every block is
    non-empty; when L < W, blocks are single tokens and tokens repeat. Padding never enters a block.
    """
    lengths = mask.sum(1, keepdim=True)  # (B, 1)
    m = torch.arange(n_blocks, device=states.device).unsqueeze(0)  # (1, W)
    start = torch.div(m * lengths, n_blocks, rounding_mode="floor")  # (B, W)
    end = torch.maximum(torch.div((m + 1) * lengths, n_blocks, rounding_mode="floor"), start + 1)
    t = torch.arange(states.shape[1], device=states.device)  # (T,)
    inside = (t >= start.unsqueeze(-1)) & (t < end.unsqueeze(-1))  # (B, W, T)
    w = inside.to(states.dtype)
    return (w @ states) / w.sum(-1, keepdim=True)  # (B, W, H)


def sinusoid(n: int, d: int) -> torch.Tensor:
    """Fixed sinusoidal codes (n, d) in [-1, 1] (Vaswani et al.) identifying slots."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    out = torch.zeros(n, d)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return out


@POOLERS.register("queries")
class QueryPool(nn.Module):
    """W learned queries (+ fixed sinusoidal slot codes) cross-attend over the tokens, then MLP + LN.

    The attention carries a block-locality prior (``locality``, see ``slot_attention_bias``) so
    slots start out reading different stretches of the text instead of one uniform average.
    The queries are not added back as a residual: at init they would be the same vector for every
    input and inflate the cosine between latents of different texts (the collapse we must avoid).
    """

    def __init__(self, d: int, wire_slots: int, n_heads: int, dropout: float, locality: float) -> None:
        super().__init__()
        # Creation order fixes the random init; stq's numbers depend on it, keep it.
        self.queries = nn.Parameter(torch.randn(wire_slots, d) * 0.02)  # (W, d)
        self.register_buffer("slot_codes", sinusoid(wire_slots, d), persistent=False)  # (W, d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.norm = nn.LayerNorm(d)
        self.wire_slots, self.n_heads, self.locality = wire_slots, n_heads, locality

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) keys/values, mask (B, T) bool with valid tokens first → (B, W, d)."""
        bias = slot_attention_bias(mask, self.wire_slots, self.locality, self.n_heads)  # (B·h, W, T)
        q = (self.queries + self.slot_codes).expand(x.shape[0], -1, -1)  # (B, W, d)
        z, _ = self.attn(q, x, x, attn_mask=bias, need_weights=False)  # (B, W, d)
        z = z + self.mlp(self.mlp_norm(z))
        return self.norm(z)  # (B, W, d)


@POOLERS.register("meanpool")
class BlockPoolHead(nn.Module):
    """Slot m = LN(mean of the m-th contiguous stretch + a learned slot embedding).

    Input-specific by construction: slots cannot all coincide unless the text is one repeated token.
    """

    def __init__(self, d: int, wire_slots: int, n_heads: int, dropout: float, locality: float) -> None:
        super().__init__()
        del n_heads, locality  # one builder signature for every pooler; block means need neither
        self.slot_emb = nn.Parameter(torch.randn(wire_slots, d) * 0.02)  # (W, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)
        self.wire_slots = wire_slots

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), mask (B, T) bool with valid tokens first → (B, W, d)."""
        return self.norm(self.drop(block_pool(x, mask, self.wire_slots)) + self.slot_emb)  # (B, W, d)
