"""Teacher-forced answer scoring from ONE forward pass.

The logits at column ``T_p - 1 + j`` predict answer token ``j`` (an explicit one-step shift done
here, with labels never handed to the model, so nothing is shifted twice). From the same logits
come the answer NLL/token, first-token top-k hits and the K-token losses used in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentwire.batching import Batch


def answer_logits(model: torch.nn.Module, batch: Batch, **model_kwargs) -> torch.Tensor:
    """Logits that predict each answer position. Returns (B, A, V) in float32."""
    if batch.answer_ids is None:
        raise ValueError("answer_logits needs a batch built with answers")
    A = batch.answer_ids.shape[1]
    out = model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=A + 1,  # columns T_p - 1 .. T_p + A - 1
        use_cache=False,
        **model_kwargs,
    )
    return out.logits[:, :-1].float()  # drop the last column: it predicts past the answer


def token_logprobs(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each gold answer token; 0 on padding (-100). Returns (B, A)."""
    mask = answer_ids != -100
    lp = F.log_softmax(logits, dim=-1)  # (B, A, V)
    gathered = lp.gather(-1, answer_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, A)
    return gathered * mask


def answer_nll(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Mean NLL per answer token for each example. Returns (B,)."""
    mask = (answer_ids != -100).float()
    return -(token_logprobs(logits, answer_ids).sum(-1)) / mask.sum(-1).clamp(min=1)


def first_token_ranks(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top-1) of the first gold answer token under the first answer logits. (B,)"""
    first = logits[:, 0]  # (B, V)
    gold = first.gather(-1, answer_ids[:, :1].clamp(min=0))  # (B, 1)
    return (first > gold).sum(-1)
