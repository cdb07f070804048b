"""Encoders on a frozen registry LLM (embed, lm-hidden) and the static control: shapes, padding
invariance, input sensitivity, frozen source model, LoRA, trainable-only checkpoints, config checks.

Every test that takes ``tiny_lm`` runs once per tiny family (Llama- and Qwen2-shaped).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from latentwire.config import ConfigError, from_dict
from latentwire.encoders import EncoderArgs, build_encoder, load_trainable_state_dict, trainable_state_dict
from latentwire.encoders.source import SourceReader, build_trunk, tokenize
from latentwire.heads.adapters import AdapterArgs
from latentwire.latent.interlingua import Interlingua, LatentArgs
from latentwire.models import LoadedModel

M, D_Z = 5, 16
TEXTS = [
    "Question: Who wrote Hamlet? Context: Hamlet is a tragedy written by William Shakespeare.",
    "Question: What is the boiling point of water? Context: At sea level water boils at 100 degrees.",
    "Question: Where is Kyoto? Context: Kyoto is a city on the island of Honshu in Japan.",
]
LONG = " ".join(["The river delta floods every spring and the farmers plant rice afterwards."] * 6)
# (name, extra EncoderArgs): both poolings, a middle layer, the last layer, LoRA, and the control
CASES = {
    "embed-meanpool": ("embed", {"pooling": "meanpool"}),
    "embed-queries": ("embed", {"pooling": "queries", "n_layers": 1}),
    "hidden-last-meanpool": ("lm-hidden", {"pooling": "meanpool"}),
    "hidden-l1-queries": ("lm-hidden", {"pooling": "queries", "source_layer": 1}),
    "hidden-lora": ("lm-hidden", {"source_layer": -1, "lora_rank": 2}),
    "static": ("static", {}),
}
INPUT_DEPENDENT = [c for c in CASES if c != "static"]


def build(lm: LoadedModel, case: str, seed: int = 0, **kw) -> torch.nn.Module:
    name, extra = CASES[case]
    torch.manual_seed(seed)
    args = EncoderArgs(name=name, d_z=D_Z, n_heads=4, source_model=lm.spec.name, **{**extra, **kw})
    return build_encoder(args, M, {lm.spec.name: lm}).eval()


def perturb_lora(enc: torch.nn.Module, seed: int = 7) -> None:
    """PEFT starts LoRA B at zero (LoRA is then a no-op and A gets no gradient); make it matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in enc.named_parameters():
            if "lora_B" in k:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def frozen_model_untouched(lm: LoadedModel) -> bool:
    """No grad, no requires_grad, eval mode and no LoRA layer on the shared source model."""
    params = list(lm.model.named_parameters())
    return (
        all(p.grad is None and not p.requires_grad for _, p in params)
        and not lm.model.training
        and not any("lora_" in n for n, _ in params)
    )


@pytest.mark.parametrize("case", CASES)
def test_shape_dtype_and_attributes(case, tiny_lm):
    enc = build(tiny_lm, case)
    z = enc(TEXTS)
    assert z.shape == (len(TEXTS), M, D_Z) and z.dtype == torch.float32
    assert (enc.wire_slots, enc.d_z) == (M, D_Z)
    assert torch.isfinite(enc(["", "x"])).all()  # empty and one-character texts are fine


@pytest.mark.parametrize("case", CASES)
def test_padding_invariance(case, tiny_lm):
    enc = build(tiny_lm, case)
    perturb_lora(enc)
    with torch.no_grad():
        alone = enc(TEXTS[2:3])
        batched = enc([LONG, TEXTS[0] + " " + LONG, TEXTS[2]])
    torch.testing.assert_close(batched[2:3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", INPUT_DEPENDENT)
def test_different_inputs_give_different_latents(case, tiny_lm):
    with torch.no_grad():
        z = build(tiny_lm, case)(TEXTS + [LONG])  # (4, M, d_z)
    zf = F.normalize(z.flatten(1), dim=-1)
    off = (zf @ zf.T)[~torch.eye(len(zf), dtype=torch.bool)]
    assert off.mean() < 0.99, f"{case}: latents of different texts nearly identical ({off.mean():.4f})"


def test_static_ignores_the_text(tiny_lm):
    enc = build(tiny_lm, "static")
    z = enc(TEXTS + [""])
    assert torch.equal(z[0], z[3]) and torch.equal(z[0], enc.bank)
    z[0].zero_()  # a copy, not a view of the bank
    assert enc.bank.abs().sum() > 0
    assert list(trainable_state_dict(enc)) == ["bank"]


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_trainable_params_only(case, tiny_lm):
    enc = build(tiny_lm, case).train()
    perturb_lora(enc)
    z = enc(TEXTS)
    # A random projection, not z.sum(): the sum of a LayerNorm output has zero gradient.
    (z * torch.randn_like(z)).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.requires_grad
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"
    assert frozen_model_untouched(tiny_lm)  # and .train() on the encoder did not reach it
    if hasattr(enc, "source") and enc.source.trunk is not None:
        assert not enc.source.trunk.training


@pytest.mark.parametrize("case", CASES)
def test_trainable_state_dict_round_trip(case, tiny_lm, tmp_path):
    enc = build(tiny_lm, case, seed=0)
    perturb_lora(enc)
    sd = trainable_state_dict(enc)
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for p in enc.parameters() if p.requires_grad)
    assert not any("embed_tokens" in k or "base_layer" in k for k in sd)  # nothing of the LLM itself
    save_file(sd, str(tmp_path / "enc.safetensors"))

    fresh = build(tiny_lm, case, seed=1)
    with torch.no_grad():
        want = enc(TEXTS)
        assert not torch.equal(fresh(TEXTS), want)
        load_trainable_state_dict(fresh, load_file(str(tmp_path / "enc.safetensors")))
        assert torch.equal(fresh(TEXTS), want)
    assert frozen_model_untouched(tiny_lm)


@pytest.mark.parametrize("rank", [0, 2])
def test_lora_params_in_state_dict_only_when_enabled(rank, tiny_lm):
    enc = build(tiny_lm, "hidden-l1-queries", lora_rank=rank)
    lora = {k for k in trainable_state_dict(enc) if "lora" in k}
    if rank == 0:
        assert not lora
        return
    # A and B for each of the 7 linear layers (q, k, v, o, gate, up, down) of the one layer that runs
    assert len(lora) == 2 * 7 and all(k.startswith("lora.layers_0_") for k in lora)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in enc.lora.values())
    # the encoder's LoRA lives in its own copy of the decoder; the shared model has none
    assert frozen_model_untouched(tiny_lm)


@pytest.mark.parametrize("layer", [0, 1, 2, -1, -2, -3])
def test_trunk_returns_hf_hidden_states_and_runs_only_the_layers_below(layer, tiny_lm):
    ids, mask = tokenize(tiny_lm.tokenizer, TEXTS, 64)
    trunk = build_trunk(tiny_lm, layer, lora_rank=0)
    assert len(trunk.layers) == layer % 3  # tiny models have 2 layers: hidden_states has 3 entries
    with torch.no_grad():
        want = tiny_lm.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        got = trunk(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state
    torch.testing.assert_close(got[mask], want.hidden_states[layer][mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [3, -4])
def test_source_layer_out_of_range_names_the_key_and_the_layer_count(layer, tiny_lm):
    with pytest.raises(ValueError, match=r"source_layer: .* has 2 layers"):
        build(tiny_lm, "hidden-last-meanpool", source_layer=layer)


def test_tokenize_pads_right_and_never_returns_an_empty_row(tiny_lm):
    ids, mask = tokenize(tiny_lm.tokenizer, ["", "a b c d e"], 3)
    assert mask.tolist()[0] == [True, False, False] and mask[1].all()  # truncated to 3 tokens
    assert ids[0, 0] == tiny_lm.tokenizer.eos_token_id  # no BOS in the tiny tokenizer: EOS stands in


def test_receiver_lora_on_the_source_model_is_not_read(tiny_lm):
    """The receivers' own LoRA (injected in place into the shared model) must not leak in."""
    from peft import LoraConfig, inject_adapter_in_model

    model = copy.deepcopy(tiny_lm.model)
    with_lora = LoadedModel(tiny_lm.spec, model, tiny_lm.tokenizer, tiny_lm.device, tiny_lm.dtype)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), model, "latentwire")
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "lora_B" in k:
                p.normal_()
    with torch.no_grad():
        assert not torch.equal(
            model(**tiny_lm.tokenizer(TEXTS[:1], return_tensors="pt")).logits,
            tiny_lm.model(**tiny_lm.tokenizer(TEXTS[:1], return_tensors="pt")).logits,
        )
        for case in ("hidden-l1-queries", "hidden-lora"):  # without and with the encoder's own LoRA
            assert torch.equal(build(with_lora, case)(TEXTS), build(tiny_lm, case)(TEXTS)), case


def test_bfloat16_source_model_gives_float32_latents_and_lora_grads(tiny_lm):
    model = copy.deepcopy(tiny_lm.model).to(torch.bfloat16)
    lm = LoadedModel(tiny_lm.spec, model, tiny_lm.tokenizer, tiny_lm.device, torch.bfloat16)
    for case in ("embed-queries", "hidden-lora"):
        enc = build(lm, case).train()
        perturb_lora(enc)
        z = enc(TEXTS)
        assert z.dtype == torch.float32 and torch.isfinite(z).all()
        (z * torch.randn_like(z)).sum().backward()
        lora = [p for k, p in enc.named_parameters() if "lora" in k]
        assert all(p.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.dtype == torch.bfloat16 and p.grad is None for p in model.parameters())


def test_interlingua_passes_loaded_models_to_the_encoder(tiny_lm, tmp_path):
    args = LatentArgs(
        n_shared=2,
        n_private=1,
        encoder=EncoderArgs(
            name="lm-hidden", d_z=D_Z, n_heads=2, source_model=tiny_lm.spec.name, lora_rank=2
        ),
        adapter=AdapterArgs(kind="mlp", hidden=16, dropout=0.0),
    )
    receivers = {"r": (24, 1.0)}  # the source model need not be a receiver
    torch.manual_seed(0)
    il = Interlingua(args, receivers, {tiny_lm.spec.name: tiny_lm}).eval()
    perturb_lora(il.encoder)
    sd = il.trainable_state_dict()
    assert any(k.startswith("encoder.lora.") for k in sd)
    save_file(sd, str(tmp_path / "il.safetensors"))
    torch.manual_seed(1)
    fresh = Interlingua(args, receivers, {tiny_lm.spec.name: tiny_lm}).eval()
    fresh.load_trainable_state_dict(load_file(str(tmp_path / "il.safetensors")))
    with torch.no_grad():
        assert torch.equal(fresh.encode(TEXTS), il.encode(TEXTS))
    with pytest.raises(ValueError, match="source_model: 'tiny-.*' is not loaded"):
        Interlingua(args, receivers)


def test_args_are_validated_strictly():
    old = {"name": "meanpool", "d_z": 64, "max_enc_tokens": 256, "minilm_path": None}  # pre-existing keys
    assert from_dict(EncoderArgs, old).pooling == "meanpool"
    ok = from_dict(
        EncoderArgs, {"name": "lm-hidden", "source_model": "m", "source_layer": -2, "lora_rank": 4}
    )
    assert (ok.source_layer, ok.lora_rank) == (-2, 4)
    assert from_dict(EncoderArgs, {"name": "embed", "source_model": "m", "max_enc_tokens": 2048})
    for bad, key in [
        ({"name": "embed"}, "source_model"),
        ({"name": "lm-hidden", "source_model": ""}, "source_model"),
        ({"name": "lm-hidden", "source_model": "m", "lora_rank": -1}, "lora_rank"),
        ({"name": "lm-hidden", "source_model": "m", "pooling": "max"}, "pooling"),
        ({"name": "lm-hidden", "source_model": "m", "source_layer": 1.5}, "source_layer"),
        ({"name": "meanpool", "max_enc_tokens": 2048}, "max_enc_tokens"),  # MiniLM stays ≤ 512
        ({"name": "statik"}, "name"),
    ]:
        with pytest.raises(ConfigError, match=key):
            from_dict(EncoderArgs, bad)


def test_length_groups_sort_by_length_and_cover_every_row_once():
    from latentwire.encoders.source import length_groups

    groups = length_groups([5, 2, 9, 2, 7, 1], rows=4)
    assert groups == [[5, 1, 3, 0], [4, 2]]
    assert sorted(i for g in groups for i in g) == list(range(6))


@pytest.mark.parametrize("lora", [0, 2])
def test_hidden_in_length_groups_equals_one_padded_forward(lora, tiny_lm):
    """SourceReader.hidden runs rows in length-sorted groups; on the valid positions that is the
    padded whole-batch forward to fp32 rounding, padding comes back as zeros, rows in input order,
    and LoRA still gets gradients."""
    texts = [TEXTS[0], LONG, "", TEXTS[1], LONG[:90], TEXTS[2]]  # lengths in no order; one empty
    trunk = build_trunk(tiny_lm, -1, lora_rank=lora)
    reader = SourceReader(tiny_lm, 64, trunk, has_lora=bool(lora))
    ids, mask = reader.tokenize(texts)
    with torch.no_grad():
        padded = trunk(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state
        grouped = reader.hidden(ids, mask)
    assert grouped.shape == padded.shape
    assert torch.allclose(grouped[mask], padded[mask], atol=1e-5, rtol=1e-5)
    assert bool((grouped[~mask] == 0).all())
    if lora:
        for k, p in trunk.named_parameters():
            if "lora_B" in k:
                p.data.normal_()
        reader.hidden(ids, mask).pow(2).sum().backward()
        grads = [p.grad for k, p in trunk.named_parameters() if "lora_" in k]
        assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)
