"""Latent prompts: real scaffold embeddings around the soft tokens, and the shuffled / zero controls.

Most tests look at the whole prompt, so the module runs with the scaffold cache off; the last tests
check what the cache changes: the scaffold's head leaves the prompt for a K/V prefix, nothing else.
"""

import pytest
import torch

from latentwire.batching import embed_ids
from latentwire.encoders import EncoderArgs
from latentwire.heads.adapters import AdapterArgs
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import LatentArgs
from latentwire.latent.payload import payload_bytes, roundtrip
from latentwire.latent.prompts import donor_map, latent_prompt_maker, latent_prompts
from latentwire.prompt import PromptArgs, build_prompt, content_text
from latentwire.scaffold_cache import scaffold_cache_off

VIEWS = [
    {"question": "Who won Super Bowl 50?", "context": "Denver Broncos defeated the Carolina Panthers."},
    {"question": "What is the capital of France?", "context": "Paris is the capital of France."},
    {"question": "Where?", "context": "Levi's Stadium in Santa Clara, California."},
]
QC = PromptArgs()
CTX = PromptArgs(
    replaces="context",
    content_template="Context: {context}",
    user_template="Question: {question}\n{content}\nAnswer with a short phrase.",
)


@pytest.fixture(autouse=True)
def whole_prompts(request):
    """The whole scaffold in every prompt, except in the tests about the cache (``cache`` in the name)."""
    if "cache" in request.node.name:
        yield
        return
    with scaffold_cache_off():
        yield


@pytest.fixture(scope="module")
def il(tiny_lm):
    torch.manual_seed(0)
    args = LatentArgs(
        n_shared=3,
        n_private=2,
        encoder=EncoderArgs(name="byte", d_z=16, n_heads=2, n_layers=1, max_bytes=256),
        adapter=AdapterArgs(hidden=32, dropout=0.0),
    )
    return build_interlingua(args, [tiny_lm], torch.device("cpu")).eval()


def _texts(views, args):
    return [content_text(v, args) for v in views]


def _soft_part(lm, args, view, prompt, il):
    """The rows of a latent prompt that sit in the content slot."""
    p = build_prompt(view, lm.tokenizer, args, lm.uses_chat_template, "latent")
    start = len(p.prefix)
    return prompt[start : start + il.args.read_slots()]


@pytest.mark.parametrize("args", [QC, CTX], ids=["question_context", "context"])
@torch.no_grad()
def test_latent_prompt_is_prefix_soft_tokens_suffix(tiny_lm, il, args):
    args.validate()
    z = il.encode(_texts(VIEWS, args))
    prompts = latent_prompts(tiny_lm, il, args, VIEWS, z)
    soft = il.soft_tokens(z, tiny_lm.spec.name)
    scaffolds = []
    for i, v in enumerate(VIEWS):
        p = build_prompt(v, tiny_lm.tokenizer, args, tiny_lm.uses_chat_template, "latent")
        assert p.content == [] and p.prefix and p.suffix
        pre = embed_ids(tiny_lm.model, p.prefix, tiny_lm.device)
        suf = embed_ids(tiny_lm.model, p.suffix, tiny_lm.device)
        assert prompts[i].shape == (len(p.prefix) + il.args.read_slots() + len(p.suffix), pre.shape[1])
        assert torch.equal(prompts[i], torch.cat([pre, soft[i], suf]))
        scaffolds.append((tuple(p.prefix), tuple(p.suffix)))
    if args.replaces == "context":  # the question is part of the scaffold: one per example
        assert len(set(scaffolds)) == len(VIEWS)
        assert len({s[0] for s in scaffolds}) == len(VIEWS)
    else:
        assert len(set(scaffolds)) == 1


@torch.no_grad()
def test_prompt_maker_uses_the_examples_own_z_and_reports_facts(tiny_lm, il):
    made = latent_prompt_maker(tiny_lm, il, QC)(VIEWS)
    prompts, facts, prefix = made.embeds, made.facts, made.prefix
    assert prefix is None  # shallow head only
    soft = il.soft_tokens(il.encode(_texts(VIEWS, QC)), tiny_lm.spec.name)
    total = il.args.total_slots(1)
    for i, v in enumerate(VIEWS):
        assert torch.equal(_soft_part(tiny_lm, QC, v, prompts[i], il), soft[i])
        text = build_prompt(v, tiny_lm.tokenizer, QC, tiny_lm.uses_chat_template, "text")
        assert facts[i] == {
            "prompt_tokens": prompts[i].shape[0],
            "content_positions": il.args.read_slots(),
            "text_content_tokens": len(text.content),
            "wire_slots": total,
            "payload_bytes": payload_bytes(total, il.args.encoder.d_z, "fp16"),
            "text_bytes": len(text.content_text.encode("utf-8")),
        }


@pytest.mark.parametrize("args", [QC, CTX], ids=["question_context", "context"])
@torch.no_grad()
def test_shuffled_control_encodes_the_next_example(tiny_lm, il, args):
    donors = donor_map(VIEWS)
    prompts = latent_prompt_maker(tiny_lm, il, args, "shuffled", donors=donors)(VIEWS).embeds
    name = tiny_lm.spec.name
    texts = _texts(VIEWS, args)
    donor_z = il.encode(texts[1:] + texts[:1])  # example i reads example i+1's Z
    own_z = il.encode(texts)
    for i, v in enumerate(VIEWS):
        got = _soft_part(tiny_lm, args, v, prompts[i], il)
        assert torch.equal(got, il.soft_tokens(donor_z, name)[i])
        assert not torch.allclose(got, il.soft_tokens(own_z, name)[i], atol=1e-3)
    # the scaffold stays the example's own (only Z is swapped)
    own = latent_prompt_maker(tiny_lm, il, args)(VIEWS).embeds
    for i, v in enumerate(VIEWS):
        pre = len(build_prompt(v, tiny_lm.tokenizer, args, tiny_lm.uses_chat_template, "latent").prefix)
        S = il.args.read_slots()
        assert torch.equal(prompts[i][:pre], own[i][:pre]) and torch.equal(
            prompts[i][pre + S :], own[i][pre + S :]
        )


@torch.no_grad()
def test_shuffled_donors_come_from_the_whole_list_and_wrap_around(tiny_lm, il):
    make = latent_prompt_maker(tiny_lm, il, QC, "shuffled", donors=donor_map(VIEWS))
    texts = _texts(VIEWS, QC)
    last = make(VIEWS[2:]).embeds  # a batch holding only the last example still gets example 0's Z
    want = il.soft_tokens(il.encode(texts[:1]), tiny_lm.spec.name)[0]
    assert torch.equal(_soft_part(tiny_lm, QC, VIEWS[2], last[0], il), want)
    with pytest.raises(ValueError, match="donors"):
        latent_prompt_maker(tiny_lm, il, QC, "shuffled")


def test_donor_map_is_the_next_example_cyclically():
    donors = donor_map(VIEWS)
    keys = [(v["question"], v["context"]) for v in VIEWS]
    assert [donors[k] for k in keys] == [VIEWS[1], VIEWS[2], VIEWS[0]]
    assert donor_map(VIEWS[:1]) == {keys[0]: VIEWS[0]}  # a single example is its own donor


@torch.no_grad()
def test_zero_control_sends_z_zero(tiny_lm, il):
    prompts = latent_prompt_maker(tiny_lm, il, QC, "zero")(VIEWS).embeds
    M, d_z = il.args.total_slots(1), il.args.encoder.d_z
    zero_soft = il.soft_tokens(torch.zeros(len(VIEWS), M, d_z), tiny_lm.spec.name)
    parts = [_soft_part(tiny_lm, QC, v, prompts[i], il) for i, v in enumerate(VIEWS)]
    for i in range(len(VIEWS)):
        assert torch.equal(parts[i], zero_soft[i])
    assert torch.equal(parts[0], parts[1])  # no trace of the content is left
    own = latent_prompt_maker(tiny_lm, il, QC)(VIEWS).embeds
    assert not torch.allclose(parts[0], _soft_part(tiny_lm, QC, VIEWS[0], own[0], il), atol=1e-3)


@torch.no_grad()
def test_z_transform_is_applied_before_the_adapter(tiny_lm, il):
    calls = []

    def int8(z):
        calls.append(z.shape)
        return roundtrip(z, "int8")

    prompts = latent_prompt_maker(tiny_lm, il, QC, z_transform=int8)(VIEWS).embeds
    assert calls == [(len(VIEWS), il.args.total_slots(1), il.args.encoder.d_z)]
    want = il.soft_tokens(roundtrip(il.encode(_texts(VIEWS, QC)), "int8"), tiny_lm.spec.name)
    for i, v in enumerate(VIEWS):
        assert torch.equal(_soft_part(tiny_lm, QC, v, prompts[i], il), want[i])


@torch.no_grad()
def test_cached_scaffold_moves_only_the_prompt_head_into_the_prefix(tiny_lm, il):
    with scaffold_cache_off():
        made = latent_prompt_maker(tiny_lm, il, QC)(VIEWS)
        whole, facts_whole, none = made.embeds, made.facts, made.prefix
    made = latent_prompt_maker(tiny_lm, il, QC)(VIEWS)
    rest, facts, prefix = made.embeds, made.facts, made.prefix
    head = build_prompt(VIEWS[0], tiny_lm.tokenizer, QC, tiny_lm.uses_chat_template, "latent").prefix
    assert none is None and prefix is not None and prefix.length == len(head)
    assert prefix.keys[0].shape[0] == len(VIEWS)
    for w, r in zip(whole, rest):
        assert torch.equal(w[len(head) :], r)  # soft tokens and suffix unchanged
    assert facts == facts_whole  # positions attended over count the cached head


@torch.no_grad()
def test_no_cache_when_the_question_is_part_of_the_scaffold(tiny_lm, il):
    prefix = latent_prompt_maker(tiny_lm, il, CTX)(VIEWS).prefix
    assert prefix is None
