"""The wire: Z quantized for transmission, as evaluation variants (``latent.wire.formats``).

Shapes: B batch, W slots, d_z latent width, S sub-vectors per slot, K = 2^bits centroids, d_s = d_z / S.

Formats and their bytes per message (what :func:`wire_bytes` counts, beside the UTF-8 bytes of the
content the latent replaces):

- ``int8`` / ``int4``: symmetric per-slot quantization, q = round(z / s) clipped to ±(2^(b-1) - 1),
  one fp16 scale s = max|z_slot| / (2^(b-1) - 1) per slot: W × d_z × b / 8 + 2 W bytes.
- ``pq``: a **learned** product quantizer. Each slot is cut into S sub-vectors of d_s dims; each
  sub-vector is sent as the index of its nearest centroid in a per-subspace codebook of K = 2^bits
  centroids, learned by k-means on the Z of ``pq_fit_examples`` TRAIN-split texts (never the
  evaluated ones): W × S × bits / 8 bytes. The codebooks (S × K × d_s fp16) are shared once
  beforehand, not per message; their size is reported as ``codebook_bytes``.

The receiver gets the dequantized Z (:meth:`Wire.roundtrip`), through the same reading heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from latentwire.config import ConfigError

WIRE_FORMATS = ("int8", "int4", "pq")


@dataclass
class WireArgs:
    """Which quantized wire formats are evaluated, and the learned quantizer's size."""

    formats: list[str] = field(default_factory=lambda: ["int8"])  # each becomes a `latent:{exp}:{fmt}` row
    pq_subvectors: int = 32  # S: sub-vectors per slot (must divide d_z)
    pq_bits: int = 8  # bits per sub-vector index (K = 2^bits centroids per subspace)
    pq_fit_examples: int = 512  # train-split texts whose Z slots fit the codebooks
    pq_iters: int = 25  # k-means iterations
    seed: int = 0

    def validate(self) -> None:
        unknown = sorted(set(self.formats) - set(WIRE_FORMATS))
        if unknown or len(set(self.formats)) != len(self.formats):
            raise ConfigError(
                f"latent.wire.formats: {self.formats} must be distinct values of {list(WIRE_FORMATS)}"
            )
        if (
            not 1 <= self.pq_bits <= 16
            or self.pq_subvectors < 1
            or self.pq_fit_examples < 1
            or self.pq_iters < 1
        ):
            raise ConfigError("latent.wire: pq_bits in [1, 16]; pq_subvectors, pq_fit_examples, pq_iters ≥ 1")


def quantize_roundtrip(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Z after symmetric per-slot ``bits``-bit quantization with fp16 scales and back. z: (B, W, d_z)."""
    qmax = 2 ** (bits - 1) - 1
    # (B, W, 1), sent as fp16: clamp to fp16's smallest normal, or tiny slots underflow to 0 → NaN
    scale = (z.abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=torch.finfo(torch.float16).tiny)
    scale = scale.half().float()
    return (z / scale).round().clamp(-qmax, qmax) * scale


class ProductQuantizer:
    """Per-subspace k-means codebooks: (S, K, d_s) float32. ``fit`` learns them from slot vectors."""

    def __init__(self, d_z: int, n_sub: int, bits: int) -> None:
        if d_z % n_sub:
            raise ConfigError(f"latent.wire.pq_subvectors: {n_sub} must divide d_z ({d_z})")
        self.d_z, self.S, self.K, self.bits = d_z, n_sub, 2**bits, bits
        self.codebooks: torch.Tensor | None = None  # (S, K, d_s)

    def fit(self, x: torch.Tensor, iters: int, seed: int = 0) -> ProductQuantizer:
        """k-means per subspace on slot vectors x (N, d_z), from a k-means++ start (centroids drawn
        with probability ∝ squared distance to the nearest one so far: a random start can seat two
        centroids in one cluster and never leave). Deterministic given ``seed``."""
        g = torch.Generator().manual_seed(seed)  # CPU draws, so any device gives the same codebooks
        sub = x.float().reshape(x.shape[0], self.S, -1).transpose(0, 1).contiguous()  # (S, N, d_s)
        S, N, _ = sub.shape
        rows = torch.arange(S, device=sub.device)
        sq = sub.pow(2).sum(-1)  # (S, N)

        def dist2(cent: torch.Tensor) -> torch.Tensor:  # (S, 1, d_s) → (S, N), as |x|² - 2x·c + |c|²
            return (sq - 2 * (sub @ cent.transpose(1, 2)).squeeze(-1) + cent.pow(2).sum(-1)).clamp(min=0)

        c = sub[rows, torch.randint(N, (S,), generator=g).to(sub.device)][:, None]  # (S, 1, d_s)
        d2 = dist2(c)
        for _ in range(1, self.K):
            cum = (d2 + 1e-12).cumsum(1)  # (S, N): inverse-CDF draw ∝ d2
            u = torch.rand(S, 1, generator=g, dtype=torch.float64).to(sub.device)
            pick = (
                torch.searchsorted(cum, (u * cum[:, -1:]).to(cum.dtype)).clamp(max=N - 1).squeeze(1)
            )  # (S,)
            new = sub[rows, pick][:, None]  # (S, 1, d_s)
            c = torch.cat([c, new], dim=1)
            d2 = torch.minimum(d2, dist2(new))
        for _ in range(iters):
            assign = _nearest(sub, c)  # (S, N)
            sums = torch.zeros_like(c).scatter_add_(1, assign[..., None].expand_as(sub), sub)  # (S, K, d_s)
            count = torch.zeros(S, self.K, device=sub.device).scatter_add_(1, assign, torch.ones_like(sq))
            c = torch.where(count[..., None] > 0, sums / count.clamp(min=1)[..., None], c)  # empty: kept
        self.codebooks = c.half().float().cpu()  # shared as fp16
        return self

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, W, S) long of Z (B, W, d_z): each sub-vector's nearest centroid."""
        B, W, _ = z.shape
        sub = z.float().reshape(B * W, self.S, -1).transpose(0, 1)  # (S, B·W, d_s)
        codes = _nearest(sub, self.codebooks.to(z.device))  # (S, B·W)
        return codes.T.reshape(B, W, self.S)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Z (B, W, d_z) float32 from codes (B, W, S)."""
        cb = self.codebooks.to(codes.device)  # (S, K, d_s)
        parts = cb[torch.arange(self.S, device=codes.device), codes]  # (B, W, S, d_s)
        return parts.reshape(*codes.shape[:2], self.d_z)

    def codebook_bytes(self) -> int:
        return self.S * self.K * (self.d_z // self.S) * 2


def _nearest(sub: torch.Tensor, c: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Index of the nearest centroid: sub (S, N, d_s), c (S, K, d_s) → (S, N) long, in chunks of N
    (the full (S, N, K) distance table would be GBs for a whole training set's slots)."""
    return torch.cat(
        [torch.cdist(sub[:, i : i + chunk], c).argmin(-1) for i in range(0, sub.shape[1], chunk)], 1
    )


def mean_bytes(wire_slots: int | Sequence[int], size: Callable[[int], int]) -> int | float:
    """``size(n)`` for one slot count, or its mean over messages of ``wire_slots`` slots each (an int
    where every message has the same size)."""
    counts = [wire_slots] if isinstance(wire_slots, int) else list(wire_slots)
    sizes = [size(n) for n in counts]
    return sizes[0] if len(set(sizes)) == 1 else sum(sizes) / len(sizes)


def wire_bytes(fmt: str, wire_slots: int, d_z: int, args: WireArgs) -> int:
    """Bytes of one message of Z (W = ``wire_slots`` × ``d_z``) in wire format ``fmt`` (see module doc)."""
    if fmt in ("int8", "int4"):
        bits = 8 if fmt == "int8" else 4
        return math.ceil(wire_slots * d_z * bits / 8) + 2 * wire_slots
    if fmt == "pq":
        return math.ceil(wire_slots * args.pq_subvectors * args.pq_bits / 8)
    raise ValueError(f"unknown wire format {fmt!r}; choose from {WIRE_FORMATS}")


class Wire:
    """The wire formats of one evaluation: round trips, and the learned quantizer once fitted."""

    def __init__(self, args: WireArgs, d_z: int) -> None:
        self.args, self.d_z = args, d_z
        self.pq: ProductQuantizer | None = None

    def fit(
        self,
        encode: Callable[[list], torch.Tensor],
        texts: Sequence,
        batch_size: int = 16,
        filled: Callable[[list], list[int] | None] | None = None,
    ) -> None:
        """Learn the PQ codebooks (if ``pq`` is a format) on the slots of ``encode(texts)`` (TRAIN
        inputs: content texts, or model views when the encoder also reads the question); ``filled``
        (Interlingua.filled): only the slots each message sends."""
        if "pq" not in self.args.formats:
            return
        rows = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                chunk = list(texts[i : i + batch_size])
                z = encode(chunk).float()  # (b, W, d_z)
                n = (filled(chunk) if filled else None) or [z.shape[1]] * len(chunk)
                rows += [z_i[:k] for z_i, k in zip(z, n)]
        self.pq = ProductQuantizer(self.d_z, self.args.pq_subvectors, self.args.pq_bits)
        self.pq.fit(torch.cat(rows), self.args.pq_iters, self.args.seed)

    def roundtrip(self, z: torch.Tensor, fmt: str) -> torch.Tensor:
        """What the receiver gets: Z (B, W, d_z) encoded to ``fmt`` and decoded."""
        if fmt in ("int8", "int4"):
            return quantize_roundtrip(z, 8 if fmt == "int8" else 4)
        if fmt == "pq":
            if self.pq is None:
                raise ValueError("wire format pq: fit the codebooks first (Wire.fit on train texts)")
            return self.pq.decode(self.pq.encode(z)).to(z.dtype)
        raise ValueError(f"unknown wire format {fmt!r}; choose from {WIRE_FORMATS}")

    def facts(self, fmt: str, wire_slots: int | Sequence[int]) -> dict:
        """Payload bytes of ``fmt`` (and the codebook's one-off size for pq) for a metrics file;
        ``wire_slots`` per message (their mean bytes, for trimmed messages) or one count for all."""
        out = {"payload_bytes": mean_bytes(wire_slots, lambda n: wire_bytes(fmt, n, self.d_z, self.args)),
               "wire_format": fmt}  # fmt: skip
        if fmt == "pq":
            out["codebook_bytes"] = self.pq.codebook_bytes() if self.pq else None
            out["pq"] = {"subvectors": self.args.pq_subvectors, "bits": self.args.pq_bits}
        return out
