"""The K/V prefix carrier, the deep-prefix generator and receiver LoRA, on tiny Llama- and
Qwen2-shaped models with grouped-query attention (4 query / 2 key-value heads).

(1) a prefix holding the text's own K/V reproduces the full-text forward, padded batches included;
(2) greedy generation through a prefilled prefix cache equals a manual no-cache decoding loop;
(3) generated prefixes have the cache layout and the calibrated scale;
(4) gradients reach encoder, adapters, deep prefix and LoRA, and nothing frozen;
(5) a save/load round trip reproduces evaluation outputs exactly.
"""

import copy
import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentwire.batching import collate, embed_ids
from latentwire.config import ConfigError, from_dict
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view
from latentwire.generation import generate_and_score
from latentwire.heads.deep_prefix import DeepPrefix, DeepPrefixArgs, kv_shape
from latentwire.heads.lora import lora_disabled
from latentwire.kv_prefix import KVPrefix, text_kv, with_prefix
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import LatentArgs
from latentwire.latent.prompts import latent_prompt_maker, latent_prompts
from latentwire.scoring import answer_logits
from latentwire.training.args import LatentRunArgs
from latentwire.training.step import _step_loss

CPU = torch.device("cpu")
TEXTS = ["Paris is the capital and largest city of France.", "Rome is the capital of Italy."]
EXAMPLES = [
    {
        "id": f"q{i}",
        "question": f"What is the capital of {c}?",
        "context": f"{city} is the capital of {c}.",
        "answers": [city],
    }
    for i, (city, c) in enumerate([("Paris", "France"), ("Rome", "Italy"), ("Oslo", "Norway")])
]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fresh_lm(tiny_lm):
    """A private copy of the tiny receiver: LoRA injection must not leak into other tests."""
    return dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model))


def ids_of(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


# --- (1) exactness of the carrier -----------------------------------------------------------------


def test_prefix_of_own_kv_reproduces_full_text_logits(tiny_lm):
    model, P = tiny_lm.model, 3
    rows = [ids_of(tiny_lm, t) for t in TEXTS]  # different lengths: the rest is left-padded
    prefix = text_kv(model, torch.tensor([r[:P] for r in rows]))
    assert prefix.keys[0].shape[:3] == (2, model.config.num_key_value_heads, P)
    rest = [embed_ids(model, r[P:], CPU) for r in rows]
    batch, kw = with_prefix(model, collate(model, rest), prefix)
    with torch.no_grad():
        got = model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            **kw,
        ).logits
        for i, r in enumerate(rows):
            want = model(input_ids=torch.tensor([r])).logits[0, P:]  # (T - P, V)
            torch.testing.assert_close(got[i, -len(want) :], want, atol=1e-4, rtol=1e-4)


def test_cache_is_fresh_for_every_forward(tiny_lm):
    prefix = text_kv(tiny_lm.model, torch.tensor([ids_of(tiny_lm, TEXTS[0])[:4]]))
    a, b = prefix.cache(tiny_lm.model), prefix.cache(tiny_lm.model)
    assert a is not b and a.get_seq_length() == b.get_seq_length() == 4


def test_prefix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="B, H_kv, P, D"):
        KVPrefix([torch.zeros(1, 2, 3, 4)], [torch.zeros(1, 2, 5, 4)])


# --- (2) generation through the prefilled cache ------------------------------------------------


def test_generation_through_prefix_equals_manual_decoding(tiny_lm):
    model, P, steps = tiny_lm.model, 4, 5
    ids = ids_of(tiny_lm, TEXTS[0])
    prefix = text_kv(model, torch.tensor([ids[:P]]))
    batch, kw = with_prefix(model, collate(model, [embed_ids(model, ids[P:], CPU)]), prefix)
    gen = generate_and_score(model, batch, steps, eos_ids=set(), **kw)
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):  # no cache at all: the full sequence every step
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    assert gen.tokens[0] == seq[len(ids) :]


# --- (3) the generator ------------------------------------------------------------------------


def test_deep_prefix_has_cache_layout_and_calibrated_scale(tiny_lm):
    model = tiny_lm.model
    n = model.config.num_hidden_layers
    shape = kv_shape(model, [1.0 + i for i in range(n)], [0.5] * n)
    assert (shape.n_kv_heads, shape.head_dim) == (
        model.config.num_key_value_heads,
        model.config.hidden_size // model.config.num_attention_heads,
    )
    gen = DeepPrefix(DeepPrefixArgs(enabled=True, hidden=16, dropout=0.0, init_gain=1.0), 8, shape)
    prefix = gen(torch.randn(3, 5, 8))  # (B, S, d_z)
    assert len(prefix.keys) == n and prefix.length == 5
    for layer, (k, v) in enumerate(zip(prefix.keys, prefix.values)):
        assert k.shape == v.shape == (3, shape.n_kv_heads, 5, shape.head_dim)
        k_rms = k.pow(2).mean(dim=(1, 2, 3)).sqrt()  # per example
        torch.testing.assert_close(k_rms, torch.full((3,), 1.0 + layer))
        torch.testing.assert_close(v.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.full((3,), 0.5))


def test_reading_heads_are_validated():
    with pytest.raises(ConfigError, match="reading head"):
        from_dict(LatentArgs, {"shallow": False}, where="latent")
    args = from_dict(LatentArgs, {"deep_prefix": {"enabled": True}, "lora": {"rank": 8}}, where="latent")
    assert args.head_name() == "shallow+deep+lora"


# --- (4) gradient routing with every head on --------------------------------------------------


def deep_run(shallow: bool = True, lora: int = 4, deep: bool = True, coproc: bool = False) -> LatentRunArgs:
    cfg = {
        "latent": {
            "n_shared": 3,
            "n_private": 1,
            "shallow": shallow,
            "encoder": {"name": "byte", "d_z": 16, "n_heads": 2, "n_layers": 1, "max_bytes": 128},
            "adapter": {"kind": "mlp", "hidden": 32, "dropout": 0.0},
            "deep_prefix": {"enabled": deep, "hidden": 32, "dropout": 0.0},
            "coprocessor": {"enabled": coproc, "width": 16, "layers": [-1]},
            "lora": {"rank": lora, "first_layers": 1},
        },
        "prompt": {"system_prompt": "", "user_template": "{content}", "answer_prefix": ""},
        "eval": {"batch_size": 3, "max_new_tokens": 3},
    }
    return from_dict(LatentRunArgs, cfg, where="latent")


def test_gradients_reach_every_head_and_nothing_frozen(fresh_lm):
    run = deep_run(lora=4)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, [fresh_lm], CPU)
    trainable = {id(p) for p in il.trainable_parameters()}
    z = il.encode([e["context"] for e in EXAMPLES])
    loss, _, _ = _step_loss(fresh_lm, il, run, EXAMPLES, z)
    loss.backward()
    names = {n for n, p in il.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("encoder.") for n in names)
    assert any(n.startswith("adapters.") for n in names)
    assert any(n.startswith("deep.") for n in names) and any("log_scale" in n for n in names if "deep" in n)
    lora = [(n, p) for n, p in fresh_lm.model.named_parameters() if "lora_" in n]
    assert lora and all(id(p) in trainable for _, p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora if "lora_B" not in n or True)
    for n, p in fresh_lm.model.named_parameters():
        if "lora_" not in n:
            assert not p.requires_grad and p.grad is None, n
    # LoRA only on the first layer's attention projections
    assert all(
        ".layers.0." in n and any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj")) for n, _ in lora
    )


def test_shallow_off_leaves_the_content_slot_empty(fresh_lm):
    run = deep_run(shallow=False, lora=0)
    il = build_interlingua(run.latent, [fresh_lm], CPU).eval()
    views = [model_view(e) for e in EXAMPLES]
    maker = latent_prompt_maker(fresh_lm, il, run.prompt)
    made = maker(views)
    prompts, facts, prefix = made.embeds, made.facts, made.prefix
    assert prefix.length == run.latent.read_slots()
    assert facts[0]["content_positions"] == run.latent.read_slots()
    assert facts[0]["prompt_tokens"] == prompts[0].shape[0] + prefix.length
    with pytest.raises(ValueError, match="deep prefix"):
        latent_prompts(fresh_lm, il, run.prompt, views, il.encode(["a", "b", "c"]))


def test_lora_disabled_restores_the_base_model(fresh_lm, tiny_lm):
    run = deep_run(lora=4)
    build_interlingua(run.latent, [fresh_lm], CPU)
    with torch.no_grad():
        for p in (p for n, p in fresh_lm.model.named_parameters() if "lora_B" in n):
            p.fill_(0.1)  # LoRA B starts at zero; make the adapters matter
        ids = torch.tensor([ids_of(tiny_lm, TEXTS[0])])
        base = tiny_lm.model(input_ids=ids).logits
        assert not torch.allclose(fresh_lm.model(input_ids=ids).logits, base)
        with lora_disabled(fresh_lm.model):
            torch.testing.assert_close(fresh_lm.model(input_ids=ids).logits, base)
    assert all(p.requires_grad for n, p in fresh_lm.model.named_parameters() if "lora_" in n)


# --- (5) checkpoint round trip ---------------------------------------------------------------


@pytest.mark.parametrize("heads", [{"lora": 4}, {"deep": False, "lora": 0, "coproc": True}])
def test_save_load_round_trip_reproduces_outputs_exactly(fresh_lm, tiny_lm, tmp_path, heads):
    run = deep_run(**heads)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, [fresh_lm], CPU)
    opt = torch.optim.AdamW(il.trainable_parameters(), lr=1e-2)
    for _ in range(2):  # move every tensor off its init (LoRA B included)
        z = il.encode([e["context"] for e in EXAMPLES])
        _step_loss(fresh_lm, il, run, EXAMPLES, z)[0].backward()
        opt.step()
        opt.zero_grad()
    save_file(
        {k: v.contiguous() for k, v in il.trainable_state_dict().items()}, str(tmp_path / "ck.safetensors")
    )
    sd = load_file(str(tmp_path / "ck.safetensors"))
    for part, on in (
        ("lora.", heads.get("lora")),
        ("deep.", heads.get("deep", True)),
        ("coproc.", heads.get("coproc")),
    ):
        assert any(k.startswith(part) for k in sd) == bool(on), part

    other = dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model))  # a fresh receiver
    torch.manual_seed(123)
    rebuilt = build_interlingua(run.latent, [other], CPU)
    rebuilt.load_trainable_state_dict(sd)
    ev = EvalArgs(n_examples=0, batch_size=3, max_new_tokens=3)
    rows = [
        evaluate(lm, EXAMPLES, latent_prompt_maker(lm, m.eval(), run.prompt), run.prompt, ev)[0]
        for lm, m in ((fresh_lm, il), (other, rebuilt))
    ]
    for a, b in zip(*rows):
        assert a["raw"] == b["raw"] and a["nll_per_token"] == b["nll_per_token"]
    views = [model_view(e) for e in EXAMPLES]
    with torch.no_grad():
        outs = []
        for lm, m in ((fresh_lm, il), (other, rebuilt)):
            made = latent_prompt_maker(lm, m, run.prompt)(views)
            prompts, prefix = made.embeds, made.prefix
            b, kw = with_prefix(lm.model, collate(lm.model, prompts, [[1, 2]] * 3), prefix)
            outs.append(answer_logits(lm.model, b, **kw))
    assert torch.equal(outs[0], outs[1])


# --- the coprocessor ------------------------------------------------------------------------


def _answer_logits(lm, il, run, views, answers):
    made = latent_prompt_maker(lm, il, run.prompt)(views)
    prompts, prefix = made.embeds, made.prefix
    b, kw = with_prefix(lm.model, collate(lm.model, prompts, answers), prefix)
    return answer_logits(lm.model, b, **kw)


def test_coprocessor_starts_exactly_at_the_shallow_reading(tiny_lm):
    """Zero-initialised deltas: the two-phase forward equals the single-pass shallow forward."""
    views = [model_view(e) for e in EXAMPLES]
    answers = [[5, 6, 7], [8], [9, 10]]
    outs = []
    for coproc in (False, True):
        torch.manual_seed(0)
        run = deep_run(lora=0, deep=False, coproc=coproc)
        il = build_interlingua(run.latent, [tiny_lm], CPU).eval()
        with torch.no_grad():
            outs.append(_answer_logits(tiny_lm, il, run, views, answers))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(outs[1][mask], outs[0][mask], atol=1e-4, rtol=1e-4)


def test_coprocessor_gets_gradients_and_logs_delta_sizes(fresh_lm):
    run = deep_run(lora=0, deep=True, coproc=True)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, [fresh_lm], CPU)
    with torch.no_grad():
        for p in il.coproc.parameters():
            p.add_(0.01 * torch.randn_like(p))  # off zero, so every coprocessor tensor gets a gradient
    z = il.encode([e["context"] for e in EXAMPLES])
    _step_loss(fresh_lm, il, run, EXAMPLES, z)[0].backward()
    for n, p in il.coproc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in fresh_lm.model.parameters())
    last = str(fresh_lm.model.config.num_hidden_layers - 1)
    assert set(il.diagnostics()[fresh_lm.spec.name]) == {last}  # layers: [-1] -> only the last one
    assert il.diagnostics()[fresh_lm.spec.name][last] > 0


def test_coprocessor_needs_the_shallow_head():
    with pytest.raises(ConfigError, match="coprocessor"):
        from_dict(
            LatentArgs,
            {"coprocessor": {"enabled": True}, "shallow": False, "deep_prefix": {"enabled": True}},
            where="latent",
        )
