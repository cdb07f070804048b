"""``adapter.init: regress``: each receiver's projector starts as a least-squares readout of Z.

Why: a fresh ``linear2`` projector maps the encoder's states into a receiver's embedding space at
random, so the receiver first reads noise at embedding scale; in 400 QA steps (issue #14's GPU runs)
the pooled encoder never got past closed book, while ``select`` (whose slots start as real token
embeddings) reads well from step 0. This start gives every slot a meaning a frozen receiver already
knows: slot m, which pools the source-model tokens of its group, reads as the **mean input embedding
of those tokens** — in the receiver's own table for the encoder's source model; for any other
receiver, the mean of ITS OWN input embeddings of the tokens (in its own tokenizer) that overlap the
slot's characters (:func:`span_targets`; a tokenizer without character offsets falls back to the
shared-vocabulary map, :func:`latentwire.heads.vocab_align.shared_vocab_map`, which gave SmolLM2 a
start near F1 0 on the CPU). At pooling factor 1 a receiver then starts close to reading the text.

The fit: on ``n_texts`` train contexts, Z (N valid slots, d_z) and targets Y (N, d_model), plus the
pad slots past each short text's end with target 0 (a pad reads as nothing); ridge regression
Y ≈ [Z, 1] A; then the projector's first layer keeps its random start W1 (hidden ≥ d_z,
full column rank) and the second becomes W2 = A_w · pinv(W1), b2 = a_b − W2 b1, so W2 (W1 z + b1) + b2
= A (z, 1) exactly. With ``calibrate_rms`` the body is fitted to targets / the embedding RMS:
the per-example calibration makes the output the same, and the weights are then ~1/RMS (about 60×
for Qwen) larger than the embedding-scale fit, so the heads' learning rate means what it says (on
the GPU, at embedding scale, 10 Adam steps at 1e-4 undid a start of answer loss 0.97: issue #14).
Needs an encoder that says which tokens each slot pools (:class:`SlotGroups`).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import torch

from latentwire.config import ConfigError
from latentwire.heads.vocab_align import shared_vocab_map

log = logging.getLogger(__name__)


@runtime_checkable
class SlotGroups(Protocol):
    """An encoder that knows which source tokens each of its slots pools."""

    def slot_groups(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T), weights (B, W, T) (each valid slot's row sums to 1), valid (B, W) bool."""
        ...

    def slot_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Per text, each valid slot's character span [start, end), in the valid mask's order."""
        ...


def span_targets(tokenizer, embed: torch.nn.Module, texts: list[str], spans: list[list[tuple[int, int]]]):
    """(N, d) float32: per slot, the mean of ``embed`` over the tokens of ``tokenizer`` that overlap
    the slot's character span (the nearest token if none does); N = all slots of ``spans`` in order.

    Tokens with an empty span (special tokens) are never used."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    device = next(embed.parameters()).device
    rows = []
    for ids, offs, sp in zip(enc["input_ids"], enc["offset_mapping"], spans):
        if not sp:
            continue
        tok = torch.tensor(offs, dtype=torch.long).reshape(-1, 2)  # (T, 2) character spans
        slot = torch.tensor(sp, dtype=torch.long).reshape(-1, 2)  # (W_i, 2)
        real = tok[:, 1] > tok[:, 0]  # (T,)
        hit = (tok[None, :, 0] < slot[:, None, 1]) & (tok[None, :, 1] > slot[:, None, 0]) & real  # (W_i, T)
        dist = (tok[None, :, 0] - slot[:, None, 0]).abs().masked_fill(~real, 1 << 30)  # (W_i, T)
        empty = ~hit.any(1)
        hit[empty, dist[empty].argmin(1)] = True
        w = hit.float() / hit.sum(1, keepdim=True)  # (W_i, T)
        with torch.no_grad():
            e = embed(torch.tensor(ids, dtype=torch.long, device=device)).float()  # (T, d)
        rows.append(w.to(e) @ e)
    return torch.cat(rows)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """A (d_in + 1, d_out) with y ≈ [x, 1] A; x (N, d_in), y (N, d_out). Float64 on x's device.

    ``ridge`` is relative to the mean diagonal of the Gram matrix (scale-free); the bias column is
    not penalised."""
    x1 = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], 1)
    gram = x1.T @ x1  # (d_in + 1, d_in + 1)
    pen = ridge * gram.diagonal()[:-1].mean() * torch.ones(x1.shape[1], dtype=torch.float64, device=x.device)
    pen[-1] = 0.0
    return torch.linalg.solve(gram + torch.diag(pen), x1.T @ y.double())


@torch.no_grad()
def set_linear2(body: torch.nn.Module, a: torch.Tensor) -> None:
    """Make a ``linear2`` body (Linear d_z→h, Linear h→d) compute [z, 1] A exactly; A (d_z + 1, d)."""
    first, second = body.proj[0], body.proj[1]
    w1 = first.weight.double()  # (h, d_z)
    if w1.shape[0] < w1.shape[1]:
        raise ConfigError(f"adapter.init regress: adapter.hidden {w1.shape[0]} must be >= d_z {w1.shape[1]}")
    a = a.to(w1.device)
    w2 = a[:-1].T @ torch.linalg.pinv(w1)  # (d, h): W2 W1 = A_w
    second.weight.copy_(w2.to(second.weight))
    second.bias.copy_((a[-1] - w2 @ first.bias.double()).to(second.bias))


@torch.no_grad()
def fit_projectors(
    il, lms: list, source, texts: list[str], batch_size: int = 16, ridge: float = 1e-3
) -> dict:
    """Fit every receiver's ``linear2`` projector (see module docstring); returns per-receiver fit R².

    ``il``: the interlingua (its encoder a :class:`SlotGroups`); ``lms``: the receivers (LoadedModel);
    ``source``: the encoder's source model (LoadedModel); ``texts``: what the encoder reads."""
    enc = il.encoder
    if not isinstance(enc, SlotGroups):
        raise ConfigError(
            f"adapter.init regress: encoder {il.args.encoder.name!r} does not expose its slot groups"
        )
    if il.args.adapter.kind != "linear2" or il.args.n_private:
        raise ConfigError("adapter.init regress: needs adapter.kind linear2 and n_private 0")
    was_training = enc.training
    enc.eval()
    src_emb = source.model.get_input_embeddings().weight
    zs, ys, pads = [], [], []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        z = enc(chunk).float()  # (B, W, d_z)
        ids, w, valid = enc.slot_groups(chunk)  # (B, T), (B, W, T), (B, W)
        y = w.to(torch.float32) @ src_emb[ids].float()  # (B, W, d_src): mean embedding of each group
        zs.append(z[valid])
        ys.append(y[valid])
        pads.append(z[~valid])  # slots past a short text's last group: the encoder's pad vector
    enc.train(was_training)
    z, y_src = torch.cat(zs), torch.cat(ys)  # (N, d_z), (N, d_src)
    z_pad = torch.cat(pads)  # (N_pad, d_z)
    report = {}
    for lm in lms:
        name = lm.spec.name
        if name == source.spec.name:
            y, how = y_src, "source tokens"
        elif lm.tokenizer.is_fast:  # character offsets: its own tokens of each slot
            spans = [
                sp
                for i in range(0, len(texts), batch_size)
                for sp in enc.slot_spans(texts[i : i + batch_size])
            ]
            y, how = span_targets(lm.tokenizer, lm.model.get_input_embeddings(), texts, spans), "own tokens"
            if y.shape[0] != z.shape[0]:
                raise RuntimeError(f"regress {name}: {y.shape[0]} span targets for {z.shape[0]} slots")
        else:
            m, _ = shared_vocab_map(
                source.tokenizer, src_emb, lm.tokenizer, lm.model.get_input_embeddings().weight
            )
            y, how = y_src @ m.to(y_src), "shared-vocabulary map"  # (N, d_model)
        # pad slots are fitted to read as zero: left out, a pad read as the ridge intercept (a blurred
        # mean token), and ~90 copies of it between context and question threw SmolLM2 into byte
        # garbage (F1 0, answer CE 13.9 on the CPU; with this, 19.0 / 3.9 against text 18.9 / 2.8)
        a = ridge_fit(torch.cat([z, z_pad]), torch.cat([y, y.new_zeros(len(z_pad), y.shape[1])]), ridge)
        fit = torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64, device=z.device)], 1) @ a
        r2 = 1.0 - float((fit - y.double()).pow(2).sum() / (y.double() - y.double().mean(0)).pow(2).sum())
        adapter = il.adapter(name)
        if adapter.calibrate:  # the calibration divides out any common scale: fit the body at unit
            a = a / adapter.target_rms  # scale, where an optimizer step is small next to its weights
        set_linear2(adapter.body, a)
        report[name] = {"slots": len(z), "pad_slots": len(z_pad), "r2": round(r2, 4), "targets": how}
        log.info(
            "adapter %s: regress start on %d slots of %d texts (%s), R² %.3f",
            name,
            len(z),
            len(texts),
            how,
            r2,
        )
    return report
