"""Gist reconstruction head: learned position queries rebuild a receiver's prompt embeddings from Z.

An auxiliary loss that makes Z keep the *content* (not only what the answer needs): for receiver m,
T learned queries (one per content token position, up to ``max_tokens``) cross-attend over Z's slots
and predict the input embeddings of the content tokens in m's own tokenization; the loss is the MSE
over real tokens, with targets divided by the embedding table's RMS so every receiver's loss has the
same scale. Only training uses it; the head is saved with the checkpoint like every trainable module.

Shapes: B batch, M slots, d_z latent width, T content tokens, d model width.
"""

from __future__ import annotations

import torch
from torch import nn


class GistHead(nn.Module):
    """Z (B, M, d_z) → reconstructed content embeddings (B, T, d_model) for T ≤ ``max_tokens``."""

    def __init__(self, d_z: int, d_model: int, max_tokens: int, n_heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(max_tokens, d_z) * 0.02)  # (T_max, d_z)
        self.norm = nn.LayerNorm(d_z)
        self.attn = nn.MultiheadAttention(d_z, n_heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(d_z), nn.Linear(d_z, d_model))
        self.max_tokens = max_tokens

    def forward(self, z: torch.Tensor, n_tokens: int) -> torch.Tensor:
        kv = self.norm(z)  # (B, M, d_z)
        q = self.queries[: min(n_tokens, self.max_tokens)].expand(z.shape[0], -1, -1)  # (B, T, d_z)
        h, _ = self.attn(q, kv, kv, need_weights=False)  # (B, T, d_z)
        return self.out(h + q)  # (B, T, d_model)


def gist_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked MSE between pred and target / scale, both (B, T, d); mask (B, T) bool. Scalar."""
    err = (pred.float() - target.float() / scale).pow(2).mean(-1)  # (B, T)
    m = mask.float()
    return (err * m).sum() / m.sum().clamp(min=1)
