"""A per-layer key/value prefix in front of a batch: the carrier of every deep reading head.

A :class:`KVPrefix` holds, for each decoder layer, keys and values of shape
``[B, num_key_value_heads, P, head_dim]`` (the layout a transformers ``Cache`` stores after RoPE).
:meth:`KVPrefix.apply` turns a left-padded :class:`~latentwire.batching.Batch` into the inputs of a
forward that reads the prefix: a FRESH ``DynamicCache`` pre-filled with the prefix (a cache is
mutated by every forward, so one is never reused), the attention mask extended by P ones in front and
position ids shifted by P. Layout of one row::

    [prefix (P) | left padding | prompt | answer]      positions: 0..P-1, then P, P+1, ...

so a prefix holding a text's own K/V reproduces the full-text forward exactly (tested). A prefix may
carry its own ``mask`` (B, P) — a left-padded cache from an earlier forward, as the latent
coprocessor produces — and then the batch continues each row at its own position (the row's count of
real prefix entries). When a model is sharded with ``device_map``, each layer's tensors are moved to
that layer's device.

Shapes: B batch, P prefix length, H_kv key/value heads, D head dim, L decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache

from latentwire.batching import Batch


@dataclass
class KVPrefix:
    """Per-layer prefix entries: ``keys[l]``, ``values[l]`` each (B, H_kv, P, D)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor | None = None  # (B, P) long, 0 on padding; None = every entry is real

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.values) or not self.keys:
            raise ValueError("KVPrefix needs one key and one value tensor per layer")
        shape = self.keys[0].shape
        for k, v in zip(self.keys, self.values):
            if k.dim() != 4 or k.shape[:3] != shape[:3] or v.shape[:3] != shape[:3]:
                raise ValueError(f"prefix tensors must be (B, H_kv, P, D) alike; got {k.shape} / {v.shape}")

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def expand(self, batch_size: int) -> KVPrefix:
        """A one-row prefix (1, H_kv, P, D) as ``batch_size`` rows: broadcast views, no copy."""
        if self.keys[0].shape[0] != 1:
            raise ValueError(f"only a one-row prefix expands; this one has {self.keys[0].shape[0]} rows")
        grow = lambda t: t.expand(batch_size, *t.shape[1:])  # noqa: E731
        mask = None if self.mask is None else self.mask.expand(batch_size, -1)
        return KVPrefix([grow(k) for k in self.keys], [grow(v) for v in self.values], mask)

    def cache(self, model: torch.nn.Module) -> DynamicCache:
        """A fresh cache holding the prefix, in the model's dtype and on each layer's device."""
        n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        if len(self.keys) != n_layers:
            raise ValueError(f"prefix has {len(self.keys)} layers, the model {n_layers}")
        devices = layer_devices(model)
        dtype = model.get_input_embeddings().weight.dtype
        cache = DynamicCache(config=model.config)
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(k.to(devices[i], dtype), v.to(devices[i], dtype), i)
        return cache

    def apply(self, model: torch.nn.Module, batch: Batch) -> tuple[Batch, dict]:
        """(batch with mask/positions extended for the prefix, forward kwargs with a fresh cache)."""
        B, P = batch.attention_mask.shape[0], self.length
        if self.keys[0].shape[0] != B:
            raise ValueError(f"prefix batch {self.keys[0].shape[0]} != batch {B}")
        device, dtype = batch.attention_mask.device, batch.attention_mask.dtype
        mask = (
            torch.ones(B, P, dtype=dtype, device=device) if self.mask is None else self.mask.to(device, dtype)
        )
        extended = replace(
            batch,
            attention_mask=torch.cat([mask, batch.attention_mask], dim=1),  # (B, P + T)
            position_ids=batch.position_ids + mask.sum(1, keepdim=True),  # continue after real entries
        )
        return extended, {"past_key_values": self.cache(model)}


def with_prefix(model: torch.nn.Module, batch: Batch, prefix: KVPrefix | None) -> tuple[Batch, dict]:
    """``prefix.apply(model, batch)``, or the batch unchanged with no extra kwargs."""
    return (batch, {}) if prefix is None else prefix.apply(model, batch)


def layer_devices(model: torch.nn.Module) -> list[torch.device]:
    """Device of each decoder layer (differs per layer only when sharded with ``device_map``)."""
    n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    default = model.get_input_embeddings().weight.device
    hf_map = getattr(model, "hf_device_map", None) or {}
    out = []
    for i in range(n_layers):
        dev = next((d for name, d in hf_map.items() if name.endswith(f"layers.{i}")), None)
        out.append(
            torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev) if dev is not None else default
        )
    return out


@torch.no_grad()
def text_kv(model: torch.nn.Module, ids: torch.Tensor) -> KVPrefix:
    """The model's own K/V for token ids (B, T) (no padding): what a perfect deep prefix would hold."""
    out = model(input_ids=ids, use_cache=True)
    return from_cache(out.past_key_values)


def from_cache(cache, mask: torch.Tensor | None = None) -> KVPrefix:
    """A :class:`KVPrefix` viewing a filled transformers cache (``mask`` (B, P) if it was padded)."""
    layers = cache.layers
    return KVPrefix([layer.keys for layer in layers], [layer.values for layer in layers], mask)


@torch.no_grad()
def kv_rms(model: torch.nn.Module, ids: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-layer RMS of the model's keys and values over token ids (1, T): the calibration targets
    that put generated prefix entries on the scale the model's attention expects."""
    pre = text_kv(model, ids)
    rms = lambda t: float(t.float().pow(2).mean().sqrt())  # noqa: E731
    return [rms(k) for k in pre.keys], [rms(v) for v in pre.values]
