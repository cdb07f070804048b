"""``byte`` encoder: UTF-8 bytes → small Transformer → W gated slot queries, no pretrained parts.

Notation: B batch, L bytes (+1 for a start byte, padded), W slots, d_z latent width.
Every text is prefixed with a start symbol, so even an empty string has one valid position and
attention never sees an all-masked row (which would give NaN).
"""

from __future__ import annotations

import torch
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels, slot_attention_bias

START, PAD = 256, 257  # symbols beyond the 256 byte values
VOCAB = 258


@ENCODERS.register("byte")
class ByteEncoder(EncoderDefaults, nn.Module):
    """Bytes + learned positions → TransformerEncoder → W queries cross-attend → gate → LayerNorm.

    Output z_m = LN(q_m + g_m · a_m), where a_m is slot m's attention read-out and g_m = σ(w·a_m + b)
    an input-dependent gate in (0, 1): the slot can learn to fall back to its query when the text
    has nothing for it, but at init the read-out (unit scale) dominates the small query (0.02).
    The cross-attention carries a block-locality prior (``slot_locality``): without it, slots
    start as the same global byte average, which barely differs between English texts.
    """

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        d = args.d_z
        self.wire_slots, self.d_z, self.max_bytes = wire_slots, d, args.max_bytes
        self.byte_emb = nn.Embedding(VOCAB, d, padding_idx=PAD)
        self.pos_emb = nn.Parameter(torch.randn(args.max_bytes + 1, d) * 0.02)  # (L_max, d_z)
        layer = nn.TransformerEncoderLayer(
            d, args.n_heads, 4 * d, args.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # Nested tensors would change which kernels run for padded vs unpadded batches.
        self.body = nn.TransformerEncoder(
            layer, args.n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.queries = nn.Parameter(torch.randn(wire_slots, d) * 0.02)  # (W, d_z)
        self.attn = nn.MultiheadAttention(d, args.n_heads, dropout=args.dropout, batch_first=True)
        self.gate = nn.Linear(d, 1)
        self.norm = nn.LayerNorm(d)
        self.n_heads, self.locality = args.n_heads, args.slot_locality

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Byte ids (B, L) int64 padded with PAD, and the validity mask (B, L) bool."""
        seqs = [[START, *t.encode("utf-8")[: self.max_bytes]] for t in texts]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        device = self.pos_emb.device
        return ids.to(device), (ids != PAD).to(device)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenize(texts)
        x = self.byte_emb(ids) + self.pos_emb[: ids.shape[1]]  # (B, L, d_z)
        x = self.body(x, src_key_padding_mask=~mask)  # (B, L, d_z)
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, W, d_z)
        bias = slot_attention_bias(mask, self.wire_slots, self.locality, self.n_heads)  # (B·h, W, L)
        a, _ = self.attn(q, x, x, attn_mask=bias, need_weights=False)  # (B, W, d_z)
        g = torch.sigmoid(self.gate(a))  # (B, W, 1)
        return self.norm(q + g * a).float()  # (B, W, d_z)
