"""Latent coprocessor: writes deltas into the frozen receiver's own key/value cache of the latent.

The "differentiable cache augmentation" design. Reading Z with the coprocessor takes two phases:

1. the frozen receiver runs over ``[scaffold before the content | soft tokens]`` (plus a deep prefix,
   if on) and fills its cache — K/V entries computed by the model itself for the latent;
2. the coprocessor, a small MLP of width ``width``, maps each read slot (and, with ``use_hidden``,
   the receiver's last hidden state at that soft token) to deltas ΔK_l, ΔV_l of shape
   (B, H_kv, S, D), added to the cache entries of the S soft tokens at the layers in ``layers``;
3. the rest of the prompt (instruction, chat turn, answer anchor) and the answer run on the
   augmented cache (:class:`~latentwire.kv_prefix.KVPrefix` with the phase-1 padding mask).

The output layer starts at zero, so training starts exactly from the shallow reading and the deltas
grow only as far as they help. Dropout acts on the deltas. The RMS of the deltas per layer of the last
forward is kept in ``last_delta_rms`` for the training log. With the coprocessor off none of this
runs: the single-pass forward is the base model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from latentwire.config import ConfigError
from latentwire.heads.deep_prefix import KVShape


@dataclass
class CoprocessorArgs:
    """The coprocessor reading head (off by default; needs the shallow head's soft tokens)."""

    enabled: bool = False
    layers: list[int] = field(default_factory=list)  # decoder layers augmented; empty = all
    width: int = 512
    dropout: float = 0.0  # on the deltas (training only)
    use_hidden: bool = True  # also read the receiver's last hidden state at each soft token

    def validate(self) -> None:
        if self.width < 1:
            raise ConfigError("coprocessor.width: must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("coprocessor.dropout: must be in [0, 1)")


class Coprocessor(nn.Module):
    """Slots (B, S, d_z) [+ hidden (B, S, d_model)] → {layer: (ΔK, ΔV)} each (B, H_kv, S, D)."""

    def __init__(self, args: CoprocessorArgs, d_z: int, d_model: int, shape: KVShape) -> None:
        super().__init__()
        args.validate()
        self.layers = list(args.layers) or list(range(shape.n_layers))
        bad = [i for i in self.layers if not -shape.n_layers <= i < shape.n_layers]
        if bad:
            raise ConfigError(f"coprocessor.layers: {bad} out of range for {shape.n_layers} layers")
        self.layers = sorted({i % shape.n_layers for i in self.layers})
        self.shape, self.use_hidden = shape, args.use_hidden
        w = args.width
        self.z_in = nn.Sequential(nn.LayerNorm(d_z), nn.Linear(d_z, w))
        self.h_in = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, w)) if args.use_hidden else None
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(w, w), nn.GELU())
        self.out = nn.Linear(w, len(self.layers) * 2 * shape.n_kv_heads * shape.head_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.drop = nn.Dropout(args.dropout)
        self.last_delta_rms: dict[int, float] = {}

    def forward(self, slots: torch.Tensor, hidden: torch.Tensor | None = None) -> dict[int, tuple]:
        B, S, _ = slots.shape
        H, D = self.shape.n_kv_heads, self.shape.head_dim
        h = self.z_in(slots)  # (B, S, w)
        if self.h_in is not None:
            if hidden is None:
                raise ValueError("use_hidden: the coprocessor needs the receiver's hidden states")
            h = h + self.h_in(hidden.float())
        delta = self.drop(self.out(self.mlp(h)))  # (B, S, L_c * 2 * H * D)
        delta = delta.view(B, S, len(self.layers), 2, H, D).permute(2, 3, 0, 4, 1, 5)  # (L_c, 2, B, H, S, D)
        self.last_delta_rms = {
            layer: float(delta[i].detach().pow(2).mean().sqrt()) for i, layer in enumerate(self.layers)
        }
        return {layer: (delta[i, 0], delta[i, 1]) for i, layer in enumerate(self.layers)}
