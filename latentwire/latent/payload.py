"""Wire format of Z: honest byte counts and the quantize/dequantize round trip.

Bytes on the wire are ``W × d_z × bits / 8`` plus per-slot scales (fp16) for int8, to be compared
with the UTF-8 bytes of the text the latent replaces.
"""

from __future__ import annotations

import torch

FORMATS = ("fp32", "fp16", "int8")


def payload_bytes(wire_slots: int, d_z: int, fmt: str) -> int:
    """Bytes to send Z of ``wire_slots`` × ``d_z`` in format ``fmt`` (int8 adds one fp16 scale per slot)."""
    if fmt == "fp32":
        return wire_slots * d_z * 4
    if fmt == "fp16":
        return wire_slots * d_z * 2
    if fmt == "int8":
        return wire_slots * d_z + wire_slots * 2
    raise ValueError(f"unknown payload format {fmt!r}; choose from {FORMATS}")


def roundtrip(z: torch.Tensor, fmt: str) -> torch.Tensor:
    """Z after encoding to ``fmt`` and decoding back (what the receiver actually gets). z: (B, W, d_z)."""
    if fmt == "fp32":
        return z
    if fmt == "fp16":
        return z.half().float()
    if fmt == "int8":
        # (B, W, 1), sent as fp16: clamp to fp16's smallest normal, or tiny slots underflow to 0 → NaN
        scale = (z.abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=torch.finfo(torch.float16).tiny)
        scale = scale.half().float()
        return (z / scale).round().clamp(-127, 127) * scale
    raise ValueError(f"unknown payload format {fmt!r}; choose from {FORMATS}")
