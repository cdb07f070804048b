"""The ``pooled-lm`` encoder on tiny Llama/Qwen2 models: slot counts, the pooled block against the
model's own layer, what each slot reads under bidirectional and causal masks, which parameters
train, and a bit-identical checkpoint round trip."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_runs import one_thread

from latentwire.encoders import EncoderArgs, build_encoder, load_trainable_state_dict, trainable_state_dict
from latentwire.encoders.pooled import group_bounds, n_groups

TEXTS = [
    "Paris is the capital and largest city of France, on the Seine.",
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
]


single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _enc(lm, wire_slots=8, **kw):
    base = dict(
        name="pooled-lm", source_model=lm.spec.name, d_z=32, drop_last=0, train_layers=1, pool_factor=4
    )
    torch.manual_seed(0)
    return build_encoder(EncoderArgs(**{**base, **kw}), wire_slots, {lm.spec.name: lm})


def test_group_bounds_factor_and_cap():
    lengths = torch.tensor([1, 7, 8, 9, 40])
    start, end, valid = group_bounds(lengths, wire_slots=5, factor=4, mode="factor")
    assert valid.sum(1).tolist() == [1, 2, 2, 3, 5]  # ceil(L / 4), capped at 5 (40 → groups of 8)
    assert [n_groups(int(n), 5, 4, "factor") for n in lengths] == [1, 2, 2, 3, 5]
    assert start[4].tolist() == [0, 8, 16, 24, 32] and end[4].tolist() == [8, 16, 24, 32, 40]
    assert end[1, :2].tolist() == [4, 7]  # the last group of a text stops at its end
    s, e, v = group_bounds(lengths, wire_slots=5, factor=4, mode="fixed")
    assert bool(v.all()) and bool((e > s).all()) and (e[:, -1] == lengths).all()


def test_slots_and_pad(tiny_lm):
    enc = _enc(tiny_lm, wire_slots=8)
    ids, mask = enc.tokenize(TEXTS)
    with torch.no_grad():
        z = enc(TEXTS)
    assert z.shape == (3, 8, 32) and z.dtype == torch.float32
    for i, L in enumerate(mask.sum(1).tolist()):
        m = n_groups(L, 8, 4, "factor")
        assert torch.equal(z[i, m:], enc.pad.expand(8 - m, -1))  # pad slots are the learned pad
        assert not torch.allclose(z[i, m - 1], enc.pad)
    fixed = _enc(tiny_lm, wire_slots=8, pool_mode="fixed")
    assert fixed.last_stats == {} and fixed(TEXTS).shape == (3, 8, 32)
    assert fixed.last_stats["filled_slots"] == 8


def test_pool_factor_one_causal_is_the_model(tiny_lm):
    """Groups of one token under the causal mask: the pooled block is the model's own last layer, so Z
    (final norm, no projection) equals the model's last hidden state on the text's tokens."""
    d = tiny_lm.model.get_input_embeddings().weight.shape[1]
    enc = _enc(tiny_lm, wire_slots=64, d_z=d, pool_factor=1, bidirectional=False)
    ids, mask = enc.tokenize(TEXTS[:1])
    with torch.no_grad():
        z = enc(TEXTS[:1])
        ref = tiny_lm.model.get_decoder()(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    L = int(mask.sum())
    torch.testing.assert_close(z[0, :L], ref[0, :L].float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_each_slot_reads_its_text(tiny_lm, bidirectional):
    """d slot / d token embedding: bidirectional → every slot depends on every token of its text;
    causal → exactly on the tokens up to its group's end. Padding is never read."""
    enc = _enc(tiny_lm, wire_slots=8, bidirectional=bidirectional)
    ids, mask = enc.tokenize(TEXTS[:2])
    e = tiny_lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    z = enc.encode_embeds(e, mask)
    start, end, valid = group_bounds(mask.sum(1), 8, 4, "factor")
    for i in range(2):
        L = int(mask[i].sum())
        for m in range(int(valid[i].sum())):
            (g,) = torch.autograd.grad(z[i, m].pow(2).sum(), e, retain_graph=True)
            reads = g[i].abs().sum(-1) > 0  # (T,)
            assert not reads[L:].any(), "a slot read padding"
            upto = L if bidirectional else int(end[i, m])
            assert reads[:upto].all(), f"slot {m} misses a token it should read"
            assert not reads[upto:L].any(), f"slot {m} reads past its group under the causal mask"
            assert not g[1 - i].abs().sum() > 0, "a slot read another text"


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_gradient_reaches_only_trainable(tiny_lm, lora_rank):
    enc = _enc(tiny_lm, wire_slots=8, lora_rank=lora_rank)
    z = enc(TEXTS)
    (z - 1).pow(2).sum().backward()
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n, _ in trainable} == {"top", "out_norm", "proj", "pad"} | (
        {"lora"} if lora_rank else set()
    )
    assert all(p.grad is not None for _, p in trainable)
    # zero in exact math: a key bias shifts all logits of a query equally; LoRA's A while B is 0
    exempt = ("k_proj.bias", "lora_A")
    assert all(p.grad.abs().sum() > 0 for n, p in trainable if not any(x in n for x in exempt))
    model_params = [p for n, p in tiny_lm.model.named_parameters() if "lora_" not in n]
    assert all(p.grad is None and not p.requires_grad for p in model_params)
    ids = {id(p) for p in tiny_lm.model.parameters()}
    assert not any(id(p) in ids for n, p in enc.named_parameters() if n.startswith("top."))  # real copies
    assert not any(k.startswith("source") for k in trainable_state_dict(enc))
    enc.zero_grad(set_to_none=True)


def test_training_leaves_the_source_model_alone(tiny_lm):
    before = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    enc = _enc(tiny_lm, wire_slots=8, train_layers=-1)
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=1.0)
    enc(TEXTS).pow(2).sum().backward()
    opt.step()
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())


def test_checkpoint_round_trip_bit_identical(tiny_lm, tmp_path):
    enc = _enc(tiny_lm, wire_slots=8, lora_rank=4)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)  # move off the init, LoRA's zero B included
        z = enc(TEXTS)
    save_file(trainable_state_dict(enc), str(tmp_path / "enc.safetensors"))
    torch.manual_seed(1)
    other = _enc(tiny_lm, wire_slots=8, lora_rank=4)
    load_trainable_state_dict(other, load_file(str(tmp_path / "enc.safetensors")))
    with torch.no_grad():
        assert torch.equal(other(TEXTS), z)
    with pytest.raises(KeyError):
        load_trainable_state_dict(_enc(tiny_lm, wire_slots=8), load_file(str(tmp_path / "enc.safetensors")))


def test_pooled_queries_sit_at_their_groups_mean_position_in_bf16(tiny_lm, monkeypatch):
    """On CUDA the pooled block runs on bf16 hidden states: the queries' RoPE positions must still be
    the exact group means (groups of 3 near token 300; bf16 weights of 1/3 put them ~0.6 off)."""
    import copy

    enc = _enc(tiny_lm, wire_slots=100, pool_factor=3)
    layer = copy.deepcopy(enc.top[-1]).to(torch.bfloat16)
    T, d = 300, enc.source.embed.weight.shape[1]
    h = torch.randn(1, T, d, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    mask = torch.ones(1, T, dtype=torch.bool)
    rotary, seen = enc.source.rotary, []

    def spy(x, position_ids):
        seen.append(position_ids)
        return type(rotary).forward(rotary, x, position_ids)

    monkeypatch.setattr(rotary, "forward", spy)
    cos, sin = rotary(h, torch.arange(T)[None])
    with torch.no_grad():
        out, valid = enc._pooled_block(layer, h, mask, cos, sin)
    assert out.shape == (1, 100, d) and bool(valid.all())
    q_pos = seen[-1]  # (1, M): the queries' positions
    assert q_pos.dtype == torch.float32
    torch.testing.assert_close(q_pos, torch.arange(100.0)[None] * 3 + 1, atol=1e-3, rtol=0)


def test_lower_layers_are_bidirectional(tiny_lm):
    """With ``bidirectional`` the layers below the pooled block read every token of the text too
    (the first token's state depends on the last one); without it they keep the causal mask."""
    for bidirectional in (True, False):
        enc = _enc(tiny_lm, wire_slots=8, bidirectional=bidirectional)
        assert len(enc.source.layers) >= 1
        ids, mask = enc.tokenize(TEXTS[:1])
        e = tiny_lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        states: list[torch.Tensor] = []

        def keep(mod, args, out, states=states):
            states.append(out[0] if isinstance(out, tuple) else out)

        hook = enc.source.layers[0].register_forward_hook(keep)
        try:
            enc.encode_embeds(e, mask)
        finally:
            hook.remove()
        L = int(mask.sum())
        (g,) = torch.autograd.grad(states[0][0, 0].pow(2).sum(), e)
        assert bool(g[0, L - 1].abs().sum() > 0) == bidirectional
