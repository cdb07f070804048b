"""Encoders: shapes, padding invariance, input sensitivity, frozen MiniLM, trainable-only checkpoints."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from latentwire.config import ConfigError, from_dict
from latentwire.encoders import (
    ENCODERS,
    EncoderArgs,
    build_encoder,
    load_minilm,
    load_trainable_state_dict,
    resolve_minilm_path,
    trainable_state_dict,
)
from latentwire.encoders.minilm import block_pool

NAMES = ["byte", "simple-st", "stq", "meanpool"]
B, M, D_Z = 3, 5, 16
TEXTS = [
    "Question: Who wrote Hamlet? Context: Hamlet is a tragedy written by William Shakespeare.",
    "Question: What is the boiling point of water? Context: At sea level water boils at 100 °C.",
    "Question: Where is Kyoto? Context: Kyoto is a city on the island of Honshu in Japan.",
]
LONG = " ".join(["The river delta floods every spring and the farmers plant rice afterwards."] * 6)


@pytest.fixture(scope="session")
def minilm():
    """The frozen MiniLM, loaded once per test session (encoders share it through the cache)."""
    return load_minilm(resolve_minilm_path(None), "cpu")


def build(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_encoder(EncoderArgs(name=name, d_z=D_Z, n_heads=4, **kw), M).eval()


def test_registry_has_every_encoder():
    # embed, lm-hidden, static: tests/encoders/test_lm.py; select: tests/encoders/test_select.py
    # (they need a tiny registry model)
    assert ENCODERS.names() == sorted(NAMES + ["embed", "lm-hidden", "pooled-lm", "select", "static"])


def test_only_the_pooled_encoder_says_its_pool_factor_is_used():
    # analysis.sweeps reports pool_factor only where the encoder's class says it pools
    assert [n for n in ENCODERS.names() if ENCODERS.get(n).pools] == ["pooled-lm"]


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_attributes(name, minilm):
    enc = build(name)
    z = enc(TEXTS)
    assert z.shape == (B, M, D_Z) and z.dtype == torch.float32
    assert (enc.wire_slots, enc.d_z) == (M, D_Z)
    assert torch.isfinite(enc(["", "x"])).all()  # empty and one-character texts are fine


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name, minilm):
    enc = build(name)
    with torch.no_grad():
        alone = enc(TEXTS[2:3])
        batched = enc([LONG, TEXTS[0] + " " + LONG, TEXTS[2]])
    torch.testing.assert_close(batched[2:3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_different_inputs_give_different_latents(name, minilm):
    with torch.no_grad():
        z = build(name)(TEXTS + [LONG])  # (4, M, d_z)
    zf = F.normalize(z.flatten(1), dim=-1)
    cos = zf @ zf.T
    off = cos[~torch.eye(len(zf), dtype=torch.bool)]
    assert off.mean() < 0.99, f"{name}: latents of different texts nearly identical ({off.mean():.4f})"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_trainable_params_only(name, minilm):
    enc = build(name).train()
    z = enc(TEXTS)
    # A random projection, not z.sum(): the sum of a LayerNorm output has zero gradient.
    (z * torch.randn_like(z)).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.requires_grad
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"
    assert all(p.grad is None and not p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training  # .train() on the encoder must not enable MiniLM dropout


@pytest.mark.parametrize("name", NAMES)
def test_trainable_state_dict_round_trip(name, minilm, tmp_path):
    enc = build(name, seed=0)
    sd = trainable_state_dict(enc)
    frozen_names = {n for n, _ in minilm.model.named_parameters()}
    assert not any("word_embeddings" in k or k in frozen_names for k in sd)
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for p in enc.parameters() if p.requires_grad)
    save_file(sd, str(tmp_path / "enc.safetensors"))

    fresh = build(name, seed=1)
    with torch.no_grad():
        want = enc(TEXTS)
        assert not torch.equal(fresh(TEXTS), want)
        load_trainable_state_dict(fresh, load_file(str(tmp_path / "enc.safetensors")))
        assert torch.equal(fresh(TEXTS), want)


def test_load_trainable_state_dict_is_strict(minilm):
    enc = build("meanpool")
    sd = trainable_state_dict(enc)
    with pytest.raises(KeyError, match="missing"):
        load_trainable_state_dict(enc, {k: v for k, v in sd.items() if k != "slot_emb"})
    with pytest.raises(KeyError, match="unexpected"):
        load_trainable_state_dict(enc, {**sd, "extra": torch.zeros(1)})


def test_block_pool_splits_own_length_and_repeats_short_inputs():
    states = torch.arange(6, dtype=torch.float32).view(1, 6, 1).repeat(2, 1, 1)  # (2, 6, 1)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out = block_pool(states, mask, 3)[..., 0]  # (2, 3)
    assert out[0].tolist() == [0.5, 2.5, 4.5]  # blocks {0,1} {2,3} {4,5}
    assert out[1].tolist() == [0.0, 0.0, 1.0]  # length 2 < 3 slots: tokens repeat, padding unused


def test_args_are_validated_strictly():
    assert from_dict(EncoderArgs, {"name": "stq", "d_z": 64}).d_z == 64
    for bad in [{"max_enc_tokens": 600}, {"d_z": 30, "n_heads": 4}, {"nmae": "stq"}, {"name": "x"}]:
        with pytest.raises(ConfigError):
            from_dict(EncoderArgs, bad)


@pytest.mark.parametrize("name", NAMES)
def test_every_encoder_meets_the_encoder_protocol(name, minilm):
    from latentwire.encoders.core import Encoder

    enc = build(name)
    assert isinstance(enc, Encoder)  # build_encoder refuses one that does not
    assert (enc.reads_answers, enc.input_independent, enc.aux_loss, dict(enc.last_stats)) == (
        False,
        False,
        None,
        {},
    )


def test_build_encoder_refuses_a_module_without_the_encoder_attributes():
    from torch import nn

    ENCODERS.register("bare-test")(lambda args, wire_slots, models: nn.Linear(2, 2))
    try:
        with pytest.raises(TypeError, match="'bare-test': Linear lacks the Encoder attributes"):
            build_encoder(EncoderArgs(name="bare-test", d_z=D_Z), M)
    finally:
        ENCODERS._items.pop("bare-test")
