"""Wire formats of Z: int8 / int4 round trips and byte counts, and the learned product quantizer."""

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.latent.payload import roundtrip
from latentwire.latent.wire import ProductQuantizer, Wire, WireArgs, quantize_roundtrip, wire_bytes


def z_batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 5, 16, generator=g) * torch.tensor([0.01, 1.0, 40.0]).view(3, 1, 1)  # (B, M, d_z)


def test_int8_is_the_existing_wire_format():
    z = z_batch()
    assert torch.equal(quantize_roundtrip(z, 8), roundtrip(z, "int8"))
    assert wire_bytes("int8", 5, 16, WireArgs()) == 5 * 16 + 2 * 5


def test_int4_uses_fifteen_levels_per_slot_within_half_a_step():
    z = z_batch()
    out = quantize_roundtrip(z, 4)
    scale = (z.abs().amax(-1, keepdim=True) / 7).half().float()  # (B, M, 1)
    levels = out / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 7 + 1e-4
    assert ((out - z).abs() <= scale / 2 + 1e-6).all()
    assert wire_bytes("int4", 5, 16, WireArgs()) == 5 * 16 // 2 + 2 * 5
    assert wire_bytes("int4", 1, 3, WireArgs()) == 2 + 2  # odd nibble counts round up to whole bytes


def test_product_quantizer_learns_the_codebook_of_clustered_slots():
    """Slots built from 4 prototypes per subspace: k-means with K = 4 finds them, so the round trip
    is exact (the prototypes are small integers, exact in fp16) and every code is used."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randint(-8, 8, (2, 4, 8), generator=g).float()  # (S, K, d_s)
    protos[:, :, 0] = torch.arange(4).float() * 20  # well separated
    pick = torch.randint(0, 4, (200, 2), generator=g)  # (N, S)
    x = torch.cat([protos[0, pick[:, 0]], protos[1, pick[:, 1]]], dim=1)  # (N, 16)
    pq = ProductQuantizer(16, n_sub=2, bits=2).fit(x, iters=20, seed=1)
    z = x.view(20, 10, 16)
    assert torch.equal(pq.decode(pq.encode(z)), z)
    assert pq.encode(z).shape == (20, 10, 2) and len(pq.encode(z).unique()) == 4
    assert pq.codebook_bytes() == 2 * 4 * 8 * 2
    assert wire_bytes("pq", 10, 16, WireArgs(pq_subvectors=2, pq_bits=2)) == 10 * 2 * 2 // 8


def test_wire_fits_pq_on_the_texts_it_is_given_only():
    seen = []

    def encode(texts):
        seen.extend(texts)
        return torch.randn(len(texts), 4, 16)

    wire = Wire(WireArgs(formats=["int8", "pq"], pq_subvectors=4, pq_bits=3, pq_iters=3), d_z=16)
    with pytest.raises(ValueError, match="fit the codebooks first"):
        wire.roundtrip(torch.zeros(1, 4, 16), "pq")
    wire.fit(encode, [f"train {i}" for i in range(10)], batch_size=4)
    assert seen == [f"train {i}" for i in range(10)]
    out = wire.roundtrip(torch.randn(2, 4, 16), "pq")
    assert out.shape == (2, 4, 16) and torch.isfinite(out).all()
    facts = wire.facts("pq", 4)
    assert facts["payload_bytes"] == 4 * 4 * 3 // 8 + 0 and facts["codebook_bytes"] == 4 * 8 * 4 * 2
    Wire(WireArgs(formats=["int4"]), 16).fit(lambda t: pytest.fail("int4 needs no fit"), ["x"])


def test_config_checks():
    with pytest.raises(ConfigError, match="distinct values"):
        from_dict(WireArgs, {"formats": ["int8", "int3"]})
    with pytest.raises(ConfigError, match="pq_bits"):
        from_dict(WireArgs, {"pq_bits": 0})
    with pytest.raises(ConfigError, match="must divide d_z"):
        ProductQuantizer(10, n_sub=3, bits=2)
