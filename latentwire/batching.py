"""Batch layout shared by scoring, generation and training.

Prompts are LEFT-padded so every prompt ends at the same column ``T_p``; answers follow,
RIGHT-padded. Then one teacher-forced forward scores every answer with the logits of the last
``A + 1`` columns, and generation continues every row from the same column. Position ids count
only real tokens (``cumsum(mask) - 1``), so padding never shifts positions.

Shapes: B batch, T_i one prompt's length, T_p = max T_i, A = max answer length, d model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Model inputs for one batch (see module docstring for the layout)."""

    inputs_embeds: torch.Tensor  # (B, T_p + A, d)
    attention_mask: torch.Tensor  # (B, T_p + A) long, 0 on padding
    position_ids: torch.Tensor  # (B, T_p + A)
    prompt_len: int  # T_p
    answer_ids: torch.Tensor | None  # (B, A) long, -100 on padding; None when there are no answers


def embed_ids(model: torch.nn.Module, ids: list[int], device: torch.device) -> torch.Tensor:
    """Input embeddings of token ids, as the model itself would compute them. Returns (T, d)."""
    emb = model.get_input_embeddings()
    return emb(torch.tensor(ids, dtype=torch.long, device=device))


def collate(
    model: torch.nn.Module,
    prompts: list[torch.Tensor],
    answers: list[list[int]] | None = None,
) -> Batch:
    """Build a :class:`Batch` from per-example prompt embeddings (each (T_i, d)) and answer ids."""
    device, dtype = prompts[0].device, prompts[0].dtype
    B, d = len(prompts), prompts[0].shape[-1]
    T_p = max(p.shape[0] for p in prompts)
    A = max((len(a) for a in answers), default=0) if answers else 0
    embeds = torch.zeros(B, T_p + A, d, device=device, dtype=dtype)  # (B, T_p + A, d)
    mask = torch.zeros(B, T_p + A, dtype=torch.long, device=device)
    ans = torch.full((B, A), -100, dtype=torch.long, device=device) if answers else None
    for i, p in enumerate(prompts):
        embeds[i, T_p - p.shape[0] : T_p] = p
        mask[i, T_p - p.shape[0] : T_p] = 1
        if answers:
            a = answers[i]
            embeds[i, T_p : T_p + len(a)] = embed_ids(model, a, device).to(dtype)
            mask[i, T_p : T_p + len(a)] = 1
            ans[i, : len(a)] = torch.tensor(a, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T_p + A)
    return Batch(embeds, mask, positions, T_p, ans)


def pad_answers(answers: list[list[int]], device: torch.device) -> torch.Tensor:
    """Right-pad answer ids with -100. Returns (B, A) long."""
    A = max(len(a) for a in answers)
    out = torch.full((len(answers), A), -100, dtype=torch.long, device=device)
    for i, a in enumerate(answers):
        out[i, : len(a)] = torch.tensor(a, dtype=torch.long, device=device)
    return out
