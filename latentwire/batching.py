"""Batch layout shared by scoring, generation and training.

Prompts are LEFT-padded so every prompt ends at the same column ``T_p``; answers follow,
RIGHT-padded. Then one teacher-forced forward scores every answer with the logits of the last
``A + 1`` columns, and generation continues every row from the same column. Position ids count
only real tokens (``cumsum(mask) - 1``), so padding never shifts positions.

Shapes: B batch, T_i one prompt's length, T_p = max T_i, A = max answer length, d model width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # kv_prefix builds on this module
    from latentwire.kv_prefix import KVPrefix


@dataclass
class Batch:
    """Model inputs for one batch (see module docstring for the layout)."""

    inputs_embeds: torch.Tensor  # (B, T_p + A, d)
    attention_mask: torch.Tensor  # (B, T_p + A) long, 0 on padding
    position_ids: torch.Tensor  # (B, T_p + A)
    prompt_len: int  # T_p
    answer_ids: torch.Tensor | None  # (B, A) long, -100 on padding; None when there are no answers


@dataclass
class Prompts:
    """One batch from a prompt maker: what each row's prompt is, and what it reports."""

    embeds: list[torch.Tensor]  # per example (T_i, d): the columns the receiver computes
    facts: list[dict]  # per example: positions attended, content positions, payload bytes, ...
    prefix: KVPrefix | None = None  # K/V every row reads first: the cached scaffold head, a deep prefix


#: A prompt maker: examples as model views -> :class:`Prompts`. Text baselines and latent prompts
#: differ only here; evaluation runs any of them the same way.
PromptMaker = Callable[[list[dict]], Prompts]


def embed_ids(model: torch.nn.Module, ids: list[int], device: torch.device) -> torch.Tensor:
    """Input embeddings of token ids, as the model itself would compute them. Returns (T, d)."""
    emb = model.get_input_embeddings()
    return emb(torch.tensor(ids, dtype=torch.long, device=device))


def collate(
    model: torch.nn.Module,
    prompts: list[torch.Tensor],
    answers: list[list[int]] | None = None,
) -> Batch:
    """Build a :class:`Batch` from per-example prompt embeddings (each (T_i, d)) and answer ids.

    Built from whole-batch ops (stack, one embedding lookup, one host-to-device copy of ids and
    mask) rather than per-row writes into a zero buffer: B in-place row writes chain B autograd
    ``CopySlices`` nodes, each cloning the whole (B, T_p + A, d) gradient in backward, and cost B
    small uploads per batch (measured at B=64, d=64 on CPU: 27 ms forward + backward before, 2 ms now).
    """
    device, dtype = prompts[0].device, prompts[0].dtype
    lengths = [p.shape[0] for p in prompts]
    T_p = max(lengths)
    rows = [
        p.to(dtype) if n == T_p else F.pad(p.to(dtype), (0, 0, T_p - n, 0)) for p, n in zip(prompts, lengths)
    ]
    embeds = torch.stack(rows)  # (B, T_p, d), left-padded with zeros
    starts = torch.tensor([T_p - n for n in lengths])  # first real column of each row
    mask = (torch.arange(T_p)[None, :] >= starts[:, None]).long()  # (B, T_p) on the host
    ans = None
    if answers:
        A = max(len(a) for a in answers)
        padded = [list(a) + [-100] * (A - len(a)) for a in answers]
        ans_host = torch.tensor(padded, dtype=torch.long).reshape(len(answers), A)  # (B, A)
        mask = torch.cat([mask, (ans_host != -100).long()], dim=1)  # (B, T_p + A)
        ans = ans_host.to(device)
        emb = model.get_input_embeddings()(ans.clamp(min=0)).to(dtype)  # (B, A, d)
        embeds = torch.cat([embeds, emb.masked_fill((ans == -100)[..., None], 0)], dim=1)  # (B, T_p + A, d)
    mask = mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T_p + A)
    return Batch(embeds, mask, positions, T_p, ans)


def pad_answers(answers: list[list[int]], device: torch.device) -> torch.Tensor:
    """Right-pad answer ids with -100. Returns (B, A) long."""
    A = max(len(a) for a in answers)
    out = torch.full((len(answers), A), -100, dtype=torch.long, device=device)
    for i, a in enumerate(answers):
        out[i, : len(a)] = torch.tensor(a, dtype=torch.long, device=device)
    return out
