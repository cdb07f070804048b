"""A frozen source model's layer-L hidden states over a split, computed once and cached compactly.

Without LoRA, what the ``lm-hidden`` encoder reads (``hidden_states[source_layer]`` of a frozen
model over each content text) never changes during training, so ``latentwire hidden-cache``
computes it ONCE per (model, layer, split). Only valid tokens are kept, example after example.

Cache file (safetensors), N examples, T_i valid tokens of example i, d the model width::

    states   (sum_i T_i, d) float16   hidden states, rows of example i at offsets[i]:offsets[i+1]
    offsets  (N + 1,)       int64     row offsets; offsets[0] = 0, offsets[N] = sum_i T_i

plus string metadata ``ids`` (JSON list of example ids, one per example, in row order) and
``meta`` (JSON: model, layer as the resolved index into ``hidden_states``, max_tokens, d,
n_examples and whatever the caller adds, e.g. the prompt-contract hash). Reading the cache is a
lookup by id; :meth:`HiddenCache.batch` re-pads rows into (B, T, d) + mask like the live encoder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latentwire.encoders.source import SourceReader, build_trunk, resolve_layer
from latentwire.io import atomic_path
from latentwire.models import LoadedModel

log = logging.getLogger(__name__)


def compute_hidden_cache(
    lm: LoadedModel, texts: list[str], layer: int, max_tokens: int, batch_size: int = 8
) -> dict[str, torch.Tensor]:
    """``states`` (sum T_i, d) float16 and ``offsets`` (N + 1,) int64 of ``texts`` (module docstring).

    Uses the encoder's own reading path (tokenisation, truncation, truncated trunk), so a cached
    row equals what a frozen ``lm-hidden`` encoder with the same ``layer`` and ``max_tokens`` reads.
    """
    if not texts:
        raise ValueError("no texts to cache hidden states for")
    reader = SourceReader(lm, max_tokens, build_trunk(lm, layer, lora_rank=0))
    rows, lengths = [], []
    for s in range(0, len(texts), batch_size):
        ids, mask = reader.tokenize(texts[s : s + batch_size])  # (b, T) each
        with torch.no_grad():
            h = reader.hidden(ids, mask)  # (b, T, d)
        for i in range(h.shape[0]):
            rows.append(h[i, mask[i]].to(torch.float16).cpu())  # (T_i, d)
            lengths.append(rows[-1].shape[0])
        log.info("hidden cache %s: %d/%d texts", lm.spec.name, min(s + batch_size, len(texts)), len(texts))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    return {"states": torch.cat(rows), "offsets": offsets}


def cache_meta(lm: LoadedModel, layer: int, max_tokens: int, tensors: dict[str, torch.Tensor]) -> dict:
    """The ``meta`` block of a cache computed by :func:`compute_hidden_cache`."""
    n_layers = len(lm.model.get_decoder().layers)
    return {
        "model": lm.spec.name,
        "layer": resolve_layer(layer, n_layers, lm.spec.name),
        "max_tokens": max_tokens,
        "d": tensors["states"].shape[1],
        "n_examples": tensors["offsets"].shape[0] - 1,
    }


def save_hidden_cache(path: str | Path, tensors: dict[str, torch.Tensor], ids: list[str], meta: dict) -> None:
    """Write the cache atomically; one unique id per example."""
    if len(set(ids)) != len(ids) or len(ids) != tensors["offsets"].shape[0] - 1:
        raise ValueError("hidden cache needs one unique example id per example")
    header = {"ids": json.dumps(ids), "meta": json.dumps(meta, default=str)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)


class HiddenCache:
    """A loaded hidden-state cache (held on the CPU), looked up by example id."""

    def __init__(self, path: str | Path) -> None:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            self.states = f.get_tensor("states")  # (sum T_i, d) float16
            self.offsets = f.get_tensor("offsets")  # (N + 1,) int64
        self.ids: list[str] = json.loads(header["ids"])
        self.meta: dict = json.loads(header["meta"])
        self.rows = {k: i for i, k in enumerate(self.ids)}

    def get(self, example_id: str) -> torch.Tensor:
        """The cached states (T_i, d) float16 of one example."""
        i = self.rows[example_id]
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def batch(self, example_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, T, d) float32, right-padded with zeros, and the mask (B, T) bool."""
        rows = [self.get(k) for k in example_ids]
        T = max(r.shape[0] for r in rows)
        states = torch.zeros(len(rows), T, self.states.shape[1])
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, r in enumerate(rows):
            states[i, : r.shape[0]] = r.float()
            mask[i, : r.shape[0]] = True
        return states, mask
