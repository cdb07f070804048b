"""Per-LLM adapters: map the shared latent Z (B, M, d_z) into one frozen LLM's input-embedding space.

Each target LLM gets its own small adapter; the encoder (and Z) is shared. Output (B, M, d_model) is
fed as soft tokens through ``inputs_embeds``. Scale matters as much as direction: soft tokens far
from the norm of real token embeddings are ignored or blow up attention, so by default every
example's output is rescaled to the RMS of the model's embedding table (``calibrate_rms``), times
a learnable factor exp(log_scale) that starts at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from latentwire.config import must
from latentwire.registry import Registry


@dataclass
class AdapterArgs:
    """Which adapter maps Z into an LLM's embedding space, and its size."""

    # linear: LN → Linear → tanh·scale; mlp: LN → 2-layer MLP + linear skip; linear2: Linear → Linear
    # (no activation, ARC-Encoder's per-decoder projector)
    kind: Literal["linear", "mlp", "linear2"] = "mlp"
    hidden: int = 1024  # mlp hidden width
    dropout: float = 0.1  # mlp, between the two layers
    tanh_scale: float = 1.0  # linear: bound of each output component before calibration
    calibrate_rms: bool = True  # rescale each example's output to the embedding table's RMS
    # mlp: "identity" starts the skip (reading raw Z) at the identity and the MLP branch at zero where
    # d_z == d_model (other widths keep the default init); "source_vocab" does the same, and a receiver
    # that is not the encoder's source model gets a least-squares skip fitted on the token strings its
    # vocabulary shares with the source model's (see latentwire/heads/vocab_align.py)
    # "regress" (linear2, an encoder that exposes its slot groups, e.g. pooled-lm): the projector
    # starts as the least-squares map from Z to the mean input embedding of the tokens each slot
    # pools, fitted on init_texts train contexts before the first step (latentwire/heads/regress_init.py)
    init: Literal["default", "identity", "source_vocab", "regress"] = "default"
    init_texts: int = 256  # regress: train contexts the fit reads
    # two learned marker embeddings (begin, end) around the soft tokens, per receiver (ARC-Encoder's
    # per-decoder markers): the soft tokens then take M + 2 prompt positions
    markers: bool = False

    def validate(self) -> None:
        must(self.hidden >= 1, "hidden", self.hidden, ">= 1")
        must(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "in [0, 1)")
        must(self.tanh_scale > 0, "tanh_scale", self.tanh_scale, "> 0")
        must(self.init_texts >= 1, "init_texts", self.init_texts, ">= 1")
        must(
            self.init != "regress" or self.kind == "linear2",
            "init",
            self.init,
            "regress only with kind linear2",
        )


# kind -> builder(args, d_z, d_model) -> nn.Module mapping (B, M, d_z) -> (B, M, d_model), uncalibrated
ADAPTERS: Registry = Registry("adapter")


@ADAPTERS.register("linear")
class LinearAdapter(nn.Module):
    """LayerNorm → Linear → tanh · tanh_scale: bounded components, so no slot can run away."""

    def __init__(self, args: AdapterArgs, d_z: int, d_model: int) -> None:
        super().__init__()
        self.norm, self.proj, self.scale = nn.LayerNorm(d_z), nn.Linear(d_z, d_model), args.tanh_scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.norm(z))) * self.scale  # (B, M, d_model)


@ADAPTERS.register("mlp")
class MLPAdapter(nn.Module):
    """LayerNorm → Linear → GELU → Dropout → Linear, plus a linear skip from the normalised input.

    The skip keeps a well-conditioned linear path from the first step (the MLP branch adds
    non-linear corrections), which helps gradients reach the encoder early in training.
    """

    def __init__(self, args: AdapterArgs, d_z: int, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_z)
        self.mlp = nn.Sequential(
            nn.Linear(d_z, args.hidden), nn.GELU(), nn.Dropout(args.dropout), nn.Linear(args.hidden, d_model)
        )
        self.skip = nn.Linear(d_z, d_model, bias=False)
        # identity init: the skip reads Z itself (no per-token normalisation), so an adapter whose Z
        # already is this model's embeddings starts as an exact pass-through
        self.raw_skip = (args.init == "identity" and d_z == d_model) or args.init == "source_vocab"
        if self.raw_skip:
            with torch.no_grad():
                if d_z == d_model:
                    self.skip.weight.copy_(torch.eye(d_model))
                self.mlp[-1].weight.zero_()
                self.mlp[-1].bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm(z)  # (B, M, d_z)
        return self.mlp(h) + self.skip(z if self.raw_skip else h)  # (B, M, d_model)


@ADAPTERS.register("linear2")
class TwoLinearAdapter(nn.Module):
    """Linear(d_z → hidden) → Linear(hidden → d_model), no activation: ARC-Encoder's projector.

    A (possibly low-rank) linear map: the encoder, not the projector, does the non-linear work, so a
    new receiver can later be attached by training this projector alone.
    """

    def __init__(self, args: AdapterArgs, d_z: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(d_z, args.hidden), nn.Linear(args.hidden, d_model))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj(z)  # (B, M, d_model)


class Adapter(nn.Module):
    """An ADAPTERS body followed, if ``calibrate_rms``, by per-example RMS calibration.

    out ← out · target_rms · exp(log_scale) / rms(out), rms over each example's M × d_model entries.
    One factor per example (not per token) keeps the relative norms of its slots, which the body
    learns; the RMS is not detached, so gradients see the normalisation.
    """

    def __init__(self, args: AdapterArgs, d_z: int, d_model: int, target_rms: float) -> None:
        super().__init__()
        if target_rms <= 0:
            raise ValueError(f"target_rms must be > 0, got {target_rms}")
        self.d_z, self.d_model, self.target_rms = d_z, d_model, float(target_rms)
        self.calibrate = args.calibrate_rms
        self.body = ADAPTERS.get(args.kind)(args, d_z, d_model)
        if self.calibrate:  # learnable gain on top of the target, exp(0) = 1 at init
            self.log_scale = nn.Parameter(torch.zeros(()))
        if args.markers:  # (2, d_model) at the embedding table's scale, outside the calibration
            self.markers = nn.Parameter(torch.randn(2, d_model) * self.target_rms)

    def forward(self, z: torch.Tensor, filled: Sequence[int] | None = None) -> torch.Tensor:
        """Z (B, M, d_z) float → soft tokens (B, M, d_model) in the same dtype as the parameters;
        (B, M + 2, d_model) with ``markers`` (begin marker, the M soft tokens, end marker).
        ``filled``: per example, the leading slots its message carries (``latent.trim_pad``): the
        calibration's RMS is taken over those only, so the unsent slots do not scale the sent ones."""
        out = self.body(z)  # (B, M, d_model)
        if self.calibrate:
            if filled is None:
                rms = out.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-12).sqrt()  # (B, 1, 1)
            else:
                n = torch.tensor(list(filled), device=out.device)  # (B,)
                keep = (torch.arange(out.shape[1], device=out.device)[None] < n[:, None])[
                    ..., None
                ]  # (B, M, 1)
                ms = (out.pow(2) * keep).sum(dim=(1, 2), keepdim=True) / (n[:, None, None] * out.shape[2])
                rms = ms.add(1e-12).sqrt()  # (B, 1, 1)
            out = out * (self.target_rms * self.log_scale.exp() / rms)
        if hasattr(self, "markers"):
            B = out.shape[0]
            out = torch.cat(
                [self.markers[:1].expand(B, 1, -1), out, self.markers[1:].expand(B, 1, -1)], dim=1
            )
        return out


def build_adapter(args: AdapterArgs, d_z: int, d_model: int, target_rms: float) -> nn.Module:
    """Adapter mapping Z (B, M, d_z) → (B, M, d_model), calibrated to ``target_rms`` if asked."""
    args.validate()
    return Adapter(args, d_z, d_model, target_rms)


@torch.no_grad()
def embedding_rms(embedding_weight: torch.Tensor, scale: float = 1.0, chunk: int = 8192) -> float:
    """Mean over rows of each row's RMS, in float32, times ``scale``.

    embedding_weight (V, d_model), any float dtype/device; read in chunks of rows so a 150k-row
    bf16 table is never copied to float32 whole. ``scale`` must be the factor between a table row
    and the vector that ``inputs_embeds`` carries for that token, i.e. the registry's
    ``input_embed_scale`` only if the scaling happens in the embedding lookup (the caller must then
    pre-scale inputs_embeds too). If the model scales ``inputs_embeds`` inside its forward, soft
    tokens get the same factor there, and the right target is the unscaled table RMS (scale=1).
    """
    total, rows = 0.0, embedding_weight.shape[0]
    for start in range(0, rows, chunk):
        block = embedding_weight[start : start + chunk].float()  # (≤chunk, d_model)
        total += block.pow(2).mean(dim=1).sqrt().sum().item()
    return total / rows * scale
