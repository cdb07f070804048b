"""Interlingua: slot routing, per-receiver soft tokens, trainable-only checkpoints, collapse gauge."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentwire.config import ConfigError, from_dict
from latentwire.encoders import EncoderArgs
from latentwire.heads.adapters import AdapterArgs
from latentwire.latent.interlingua import Interlingua, LatentArgs, mean_pairwise_cosine

D_Z = 8
TEXTS = ["Question: Who wrote Hamlet? Context: William Shakespeare.", "Question: Where? Context: Kyoto."]


def latent_args(encoder: str = "byte", n_shared: int = 2, n_private: int = 3) -> LatentArgs:
    return LatentArgs(
        n_shared=n_shared,
        n_private=n_private,
        encoder=EncoderArgs(name=encoder, d_z=D_Z, n_heads=2, n_layers=1, max_bytes=128),
        adapter=AdapterArgs(kind="mlp", hidden=16, dropout=0.0),
    )


def build(receivers: dict, seed: int = 0, **kw) -> Interlingua:
    torch.manual_seed(seed)
    return Interlingua(latent_args(**kw), receivers).eval()


def test_slots_for_reads_shared_then_own_private_block():
    # names are sorted: a, b, c → private blocks [2:5], [5:8], [8:11] after 2 shared slots
    il = build({"c": (12, 1.0), "a": (12, 1.0), "b": (12, 1.0)})
    M = il.args.total_slots(3)
    assert M == 11 and il.args.read_slots() == 5 and il.names == ["a", "b", "c"]
    z = torch.arange(M, dtype=torch.float32).view(1, M, 1).expand(2, M, D_Z)  # slot m holds m
    assert il.slots_for(z, "a")[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert il.slots_for(z, "b")[0, :, 0].tolist() == [0, 1, 5, 6, 7]
    assert il.slots_for(z, "c")[1, :, 0].tolist() == [0, 1, 8, 9, 10]


def test_slots_for_without_shared_or_private_slots():
    z = torch.arange(4.0).view(1, 4, 1)
    only_private = build({"x": (4, 1.0), "y": (4, 1.0)}, n_shared=0, n_private=2)
    assert only_private.slots_for(z, "y")[0, :, 0].tolist() == [2, 3]
    only_shared = build({"x": (4, 1.0), "y": (4, 1.0)}, n_shared=4, n_private=0)
    assert only_shared.slots_for(z, "y")[0, :, 0].tolist() == [0, 1, 2, 3]


def test_soft_tokens_per_receiver_width_and_rms():
    il = build({"small": (24, 0.5), "large": (40, 2.0)})
    z = il.encode(TEXTS)
    assert z.shape == (2, il.args.total_slots(2), D_Z) and z.dtype == torch.float32
    small, large = il.soft_tokens(z, "small"), il.soft_tokens(z, "large")
    assert small.shape == (2, 5, 24) and large.shape == (2, 5, 40)
    # each adapter calibrates to its own receiver's embedding RMS
    assert small.pow(2).mean(dim=(1, 2)).sqrt().tolist() == pytest.approx([0.5, 0.5], rel=1e-4)
    assert large.pow(2).mean(dim=(1, 2)).sqrt().tolist() == pytest.approx([2.0, 2.0], rel=1e-4)
    # a receiver's soft tokens depend only on the slots it reads
    z2 = z.clone()
    z2[:, 5:8] += torch.randn(2, 3, D_Z)  # private block of "small" (names: large, small)
    assert torch.equal(il.soft_tokens(z2, "large"), large)
    assert not torch.allclose(il.soft_tokens(z2, "small"), small)


def test_latent_args_validate():
    for ok in ({"n_shared": 0, "n_private": 1}, {"n_shared": 1, "n_private": 0}):
        from_dict(LatentArgs, ok, where="latent")
    with pytest.raises(ConfigError, match="^latent: n_shared \\+ n_private must be >= 1"):
        from_dict(LatentArgs, {"n_shared": 0, "n_private": 0}, where="latent")
    for bad, key in (({"n_shared": -1, "n_private": 4}, "n_shared"), ({"n_private": -1}, "n_private")):
        with pytest.raises(ConfigError, match=f"^latent\\.{key}: must be >= 0, got -1$"):
            from_dict(LatentArgs, bad, where="latent")
    with pytest.raises(ConfigError, match="d_z"):  # nested encoder args are validated too
        from_dict(LatentArgs, {"encoder": {"d_z": 10, "n_heads": 4}}, where="latent")
    assert LatentArgs(n_shared=3, n_private=2).total_slots(4) == 11


def test_trainable_state_dict_excludes_frozen_minilm_and_round_trips(tmp_path):
    receivers = {"qwen2.5-x": (24, 0.5), "llama-3.2.y": (16, 1.0)}
    il = build(receivers, seed=0, encoder="meanpool")
    sd = il.trainable_state_dict()
    enc_keys = {k for k in sd if k.startswith("encoder.")}
    assert enc_keys == {
        "encoder.proj.weight",
        "encoder.proj.bias",
        "encoder.slot_emb",
        "encoder.norm.weight",
        "encoder.norm.bias",
    }
    assert {k.split(".")[1] for k in sd if k.startswith("adapters.")} == {"qwen2_5-x", "llama-3_2_y"}
    n_trainable = sum(p.numel() for p in il.parameters() if p.requires_grad)
    assert sum(v.numel() for v in sd.values()) == n_trainable < 100_000  # MiniLM alone is ~22M
    path = tmp_path / "il.safetensors"
    save_file(sd, str(path))

    fresh = build(receivers, seed=1234, encoder="meanpool")
    z_old, z_new = il.encode(TEXTS), fresh.encode(TEXTS)
    assert not torch.allclose(z_old, z_new)  # a different seed really gives different weights
    fresh.load_trainable_state_dict(load_file(str(path)))
    z_new = fresh.encode(TEXTS)
    assert torch.equal(z_new, z_old)
    for name in receivers:  # model names with dots work end to end
        assert torch.equal(fresh.soft_tokens(z_new, name), il.soft_tokens(z_old, name))


def test_trainable_state_dict_is_a_snapshot():
    """Later updates must not leak into a state dict taken earlier (e.g. a kept best checkpoint)."""
    il = build({"a": (8, 1.0)})
    sd = il.trainable_state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    with torch.no_grad():
        for p in il.parameters():
            p.add_(1.0)
    changed = [k for k in sd if not torch.equal(sd[k], before[k])]
    assert not changed, changed


def test_load_trainable_state_dict_is_strict():
    il = build({"a": (8, 1.0)})
    sd = il.trainable_state_dict()
    with pytest.raises(KeyError, match="unexpected checkpoint keys"):
        il.load_trainable_state_dict({**sd, "extra.weight": torch.zeros(1)})
    missing = dict(sd)
    missing.pop(next(k for k in sd if k.startswith("adapters.")))
    with pytest.raises(RuntimeError, match="Missing key"):
        il.load_trainable_state_dict(missing)
    missing = dict(sd)
    missing.pop("encoder.queries")
    with pytest.raises(KeyError, match="missing"):
        il.load_trainable_state_dict(missing)


def test_receiver_names_that_map_to_the_same_module_key_are_rejected():
    with pytest.raises(ValueError, match="same adapter key"):
        build({"qwen2.5": (8, 1.0), "qwen2_5": (8, 1.0)})


def test_mean_pairwise_cosine():
    row = torch.randn(1, 3, 4)
    assert mean_pairwise_cosine(row.expand(5, 3, 4)) == pytest.approx(1.0, abs=1e-6)
    eye = torch.eye(6).view(6, 2, 3)  # six one-hot examples: pairwise orthogonal
    assert mean_pairwise_cosine(eye) == pytest.approx(0.0, abs=1e-7)
    opposite = torch.stack([row[0], -row[0]])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0, abs=1e-6)
    # mean over the off-diagonal pairs only: (1 + 0 + 0) * 2 / 6 for rows {u, u, v}, u ⟂ v
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert mean_pairwise_cosine(torch.stack([u, 2 * u, v]).view(3, 1, 2)) == pytest.approx(1 / 3)
    assert math.isnan(mean_pairwise_cosine(row))
