"""Wire format of Z: byte counts per format and the quantize/dequantize round trip's error bounds."""

import pytest
import torch

from latentwire.latent.payload import FORMATS, payload_bytes, roundtrip


def test_payload_bytes_by_hand():
    assert payload_bytes(48, 256, "fp32") == 49152  # 48 * 256 * 4
    assert payload_bytes(48, 256, "fp16") == 24576  # 48 * 256 * 2
    assert payload_bytes(48, 256, "int8") == 12384  # 48 * 256 * 1 + 48 fp16 scales * 2
    assert payload_bytes(1, 1, "int8") == 3
    assert FORMATS == ("fp32", "fp16", "int8")


def _z(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1e-3, 1.0, 250.0]).view(3, 1, 1)  # very different slot magnitudes
    return torch.randn(3, 4, 64, generator=g) * scales  # (B, M, d_z)


def test_fp32_is_the_identity():
    z = _z()
    assert torch.equal(roundtrip(z, "fp32"), z)


def test_fp16_error_is_within_half_precision():
    z = _z()
    out = roundtrip(z, "fp16")
    assert out.dtype == torch.float32 and out.shape == z.shape
    assert not torch.equal(out, z)  # it really went through fp16
    # round-to-nearest in fp16: relative error <= 2^-11 for values in the normal range
    assert torch.all((out - z).abs() <= z.abs() * 2.0**-11 + 1e-7)


def test_int8_error_is_at_most_half_a_step_per_slot():
    z = _z()
    out = roundtrip(z, "int8")
    assert out.dtype == torch.float32 and out.shape == z.shape
    # the scale each slot sends: its max |z| / 127 (at least fp16's smallest normal), stored as fp16
    tiny = torch.finfo(torch.float16).tiny
    scale = (z.abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=tiny).half().float()  # (B, M, 1)
    assert scale.min() > 0 and scale[0].max() < 1e-4  # the 1e-3 example needs the clamp
    err = (out - z).abs()
    assert torch.all(err <= scale / 2 * (1 + 1e-6))
    # the dequantized values lie on the slot's 255-level grid
    levels = out / scale
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= 127 + 1e-3
    # and the error is really there (not a disguised identity), on every magnitude
    assert all(err[b].max() > 0 for b in range(z.shape[0]))


def test_int8_keeps_zero_and_tiny_slots_finite():
    """A scale below fp16's range used to underflow to 0 on the wire: 0 / 0 gave NaN."""
    z = torch.zeros(1, 3, 8)
    z[0, 1] = torch.linspace(-1, 1, 8)
    z[0, 2] = torch.linspace(-1, 1, 8) * 1e-7
    out = roundtrip(z, "int8")
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 0], torch.zeros(8))
    assert (out[0, 2] - z[0, 2]).abs().max() <= torch.finfo(torch.float16).tiny / 2


@pytest.mark.parametrize(
    "fn", [lambda f: payload_bytes(4, 8, f), lambda f: roundtrip(torch.zeros(1, 1, 1), f)]
)
def test_unknown_format_is_an_error(fn):
    with pytest.raises(ValueError, match="unknown payload format 'bf16'"):
        fn("bf16")
