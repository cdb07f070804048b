"""The constant scaffold in front of every prompt, computed once and read as a K/V prefix.

Under the prompt contract a receiver's prompts start with the same tokens — BOS, the system prompt
and the chat header up to the user turn's content — whenever the content replaces question and
context and the shots are fixed (42 of Qwen's 65 scaffold tokens in the embedded default). Running
those columns through the frozen receiver in every forward and backward of every row is wasted work:
their keys and values depend on nothing that varies. :func:`scaffold_prefix` runs the receiver over
them once, keeps the per-layer K/V (1, H_kv, P, D), and hands a batch the entries broadcast over its
rows as a :class:`~latentwire.kv_prefix.KVPrefix`. The batch then holds only what follows: content
(text tokens or soft tokens), the scaffold's suffix and the answer. Logits equal the full forward's
to rounding (tested): the scaffold sits at positions 0..P-1 either way and the left padding moves
behind it, masked.

The cached entries are only valid for the weights they were computed with. An entry is keyed by the
token ids, the autocast dtype and a signature of the model's parameter versions (every in-place
update of a weight — an optimizer step, a checkpoint load — bumps it). No cache is used for a receiver
that carries LoRA tensors (a LoRA reading head, a tuned text ceiling: they train, and a teacher
forward switches them off without changing any weight), for one with activation checkpointing on
(transformers drops ``past_key_values`` in a checkpointed layer), or while gradients are on and one
of the receiver's own tensors trains.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from latentwire.kv_prefix import KVPrefix, text_kv

_CACHES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


_OFF = threading.local()


@contextmanager
def scaffold_cache_off():
    """Within this block every prompt carries its whole scaffold (for callers that need the full
    prompt embeddings, and for measuring what the cache saves)."""
    before = getattr(_OFF, "on", False)
    _OFF.on = True
    try:
        yield
    finally:
        _OFF.on = before


def usable(model: nn.Module) -> bool:
    """Whether a cached scaffold is valid for this forward: never for a receiver with LoRA tensors
    (they train, or are switched off for a teacher forward without any weight changing), and not
    while gradients are on and any of the receiver's own tensors trains (its K/V would need a graph)."""
    if getattr(_OFF, "on", False) or any("lora_" in name for name, _ in model.named_parameters()):
        return False
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return False  # a checkpointed layer drops past_key_values
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters()))


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    kind = device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def _signature(model: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in model.parameters())


def scaffold_prefix(model: nn.Module, ids: Sequence[int], batch_size: int) -> KVPrefix | None:
    """The receiver's K/V for the scaffold ``ids``, broadcast to ``batch_size`` rows
    ((B, H_kv, P, D) views of one (1, H_kv, P, D) computation), or None when no cache may be used
    (see :func:`usable`) or ``ids`` is empty."""
    if not ids or not usable(model):
        return None
    device = model.get_input_embeddings().weight.device
    key = (tuple(int(i) for i in ids), _autocast_dtype(device))
    entries = _CACHES.setdefault(model, {})
    signature = _signature(model)
    hit = entries.get(key)
    if hit is None or hit[0] != signature:
        with torch.no_grad():
            kv = text_kv(model, torch.tensor([list(key[0])], dtype=torch.long, device=device))
        entries[key] = hit = (signature, kv)
    return hit[1].expand(batch_size)


def shared_scaffold(prefixes: Sequence[Sequence[int]]) -> list[int] | None:
    """The scaffold every prompt of a batch starts with, when all rows share it exactly; else None."""
    first = list(prefixes[0]) if prefixes else []
    return first if first and all(list(p) == first for p in prefixes[1:]) else None
