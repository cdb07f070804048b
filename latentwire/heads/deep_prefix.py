"""Deep prefix: a per-receiver generator that maps Z's slots to key/value entries of every layer.

Prefix tuning / P-tuning v2 show that per-layer K/V carry far more into a frozen model than
input-embedding soft tokens. For receiver m reading S slots (B, S, d_z) the generator computes

    h = LN(dropout(slots)); h = LN(h + MLP(h)); [K_l | V_l] = W h          for every layer l

and reshapes to the cache layout [B, H_kv, P = S, D] (grouped-query attention: H_kv from the
model's config). With ``calibrate_rms`` each example's K_l (and V_l) is rescaled to the RMS of the
model's own keys (values) at layer l, measured once on real text (:func:`kv_rms`), times a
learnable per-layer gain exp(log_scale) starting at ``init_gain`` — the K/V analogue of the adapters'
embedding-RMS calibration. The calibration targets are persistent buffers, so a checkpoint rebuilds
the exact generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from latentwire.config import ConfigError
from latentwire.kv_prefix import KVPrefix


@dataclass
class DeepPrefixArgs:
    """The deep-prefix reading head (off by default)."""

    enabled: bool = False
    hidden: int = 1024  # width of the residual MLP
    dropout: float = 0.1  # prompt dropout on the slots before the generator (training only)
    calibrate_rms: bool = True  # rescale K/V per layer to the model's own K/V RMS
    # starting gain on that RMS: random entries at full scale swamp the frozen model's attention
    # (answer CE of Qwen2.5-0.5B on SQuAD: 4.7 shallow-only → 10.1 with a full-scale random prefix,
    # 5.1 at 0.3, 4.7 at 0.1), so the prefix starts quiet and its learnable gain grows as it helps
    init_gain: float = 0.1

    def validate(self) -> None:
        if self.hidden < 1:
            raise ConfigError("deep_prefix.hidden: must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("deep_prefix.dropout: must be in [0, 1)")
        if self.init_gain <= 0:
            raise ConfigError("deep_prefix.init_gain: must be > 0")


@dataclass(frozen=True)
class KVShape:
    """What a receiver's cache looks like: layers, key/value heads, head dim, per-layer K/V RMS."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    k_rms: tuple[float, ...] = ()
    v_rms: tuple[float, ...] = ()


def kv_shape(model: torch.nn.Module, k_rms=(), v_rms=()) -> KVShape:
    """The cache shape of a transformers causal LM, read from its config."""
    cfg = model.config.get_text_config(decoder=True)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or heads
    return KVShape(cfg.num_hidden_layers, n_kv, head_dim, tuple(k_rms), tuple(v_rms))


class DeepPrefix(nn.Module):
    """Slots (B, S, d_z) → :class:`KVPrefix` with keys/values (B, H_kv, S, D) for every layer."""

    def __init__(self, args: DeepPrefixArgs, d_z: int, shape: KVShape) -> None:
        super().__init__()
        args.validate()
        self.shape, self.calibrate = shape, args.calibrate_rms
        L, H, D = shape.n_layers, shape.n_kv_heads, shape.head_dim
        self.drop = nn.Dropout(args.dropout)
        self.norm = nn.LayerNorm(d_z)
        self.mlp = nn.Sequential(nn.Linear(d_z, args.hidden), nn.GELU(), nn.Linear(args.hidden, d_z))
        self.out_norm = nn.LayerNorm(d_z)
        self.proj = nn.Linear(d_z, L * 2 * H * D)
        if self.calibrate:
            if len(shape.k_rms) != L or len(shape.v_rms) != L:
                raise ValueError("calibrate_rms needs the model's per-layer K/V RMS (kv_rms)")
            target = torch.tensor([shape.k_rms, shape.v_rms], dtype=torch.float32)  # (2, L)
            self.register_buffer("target_rms", target)
            self.log_scale = nn.Parameter(torch.full((2, L), math.log(args.init_gain)))

    def forward(self, slots: torch.Tensor) -> KVPrefix:
        B, S, _ = slots.shape
        L, H, D = self.shape.n_layers, self.shape.n_kv_heads, self.shape.head_dim
        h = self.norm(self.drop(slots))  # (B, S, d_z)
        h = self.out_norm(h + self.mlp(h))
        kv = self.proj(h).view(B, S, L, 2, H, D).permute(2, 3, 0, 4, 1, 5)  # (L, 2, B, H, S, D)
        if self.calibrate:
            rms = kv.pow(2).mean(dim=(3, 4, 5), keepdim=True).add(1e-12).sqrt()  # (L, 2, B, 1, 1, 1)
            gain = (self.target_rms * self.log_scale.exp()).T[:, :, None, None, None, None]  # (L, 2, 1...)
            kv = kv / rms * gain
        return KVPrefix(list(kv[:, 0].unbind(0)), list(kv[:, 1].unbind(0)))
