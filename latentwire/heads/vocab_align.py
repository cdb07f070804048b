"""Start a receiver's adapter as a least-squares map from the encoder's source-model embedding space
into the receiver's, fitted on the token strings the two vocabularies share.

When Z slots are (at initialisation) rows of the source model's input-embedding table — the
``select`` encoder with ``select_features: embed`` and ``d_z`` equal to the source width — a
receiver with another tokenizer still has to learn to read them. Both tables embed many of the
same strings (byte-level BPE vocabularies of English-trained models overlap by tens of thousands
of tokens), so a ridge regression W: (d_src) → (d_model) from source rows to receiver rows of the
shared strings gives a reading head that starts close to "the receiver's own embedding of the same
piece of text" instead of noise. Measured on SmolLM2-135M ← Qwen2.5-Coder-0.5B (39,237 shared
strings, ridge 1e-3): held-out shared tokens map to their own SmolLM2 row as the cosine-nearest of
49,152 rows for 51 % (top-5: 65 %), mean cosine 0.79. Training then refines it like any adapter.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def shared_vocab_map(
    src_tok, src_emb: torch.Tensor, dst_tok, dst_emb: torch.Tensor, ridge: float = 1e-3
) -> tuple[torch.Tensor, int]:
    """Ridge least-squares W (d_src, d_dst) with src_emb[s] @ W ≈ dst_emb[t] for shared strings.

    src_emb (V_src, d_src), dst_emb (V_dst, d_dst): input-embedding tables, any float dtype/device.
    ``ridge`` is relative to the mean squared source entry, so it does not depend on the scale of
    the table. Returns (W in float32 on the CPU, number of shared strings used).
    """
    src_vocab, dst_vocab = src_tok.get_vocab(), dst_tok.get_vocab()
    shared = sorted(set(src_vocab) & set(dst_vocab))
    if len(shared) < 2:
        raise ValueError(f"the two vocabularies share {len(shared)} token strings; cannot fit a map")
    x = src_emb.detach().float().cpu()[torch.tensor([src_vocab[t] for t in shared])]  # (n, d_src)
    y = dst_emb.detach().float().cpu()[torch.tensor([dst_vocab[t] for t in shared])]  # (n, d_dst)
    gram = x.T @ x  # (d_src, d_src)
    gram += ridge * len(shared) * x.pow(2).mean() * torch.eye(x.shape[1])
    return torch.linalg.solve(gram, x.T @ y), len(shared)  # (d_src, d_dst)
