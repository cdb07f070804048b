"""The question-conditioned ``pooled-lm`` (``question_template``): the question's tokens go in front
of the content, every layer and pooled query reads them, no slot pools them (slots, groups and the
payload count content only); Z changes with the question; without a template the questions are
ignored; the interlingua memo keys Z by question and text; every encoding path (prompts, the
shuffled control, training) hands the view's question to the encoder; the config refuses a template
on another encoder or one without ``{question}``."""

import pytest
import torch
from tiny_runs import one_thread

from latentwire.config import ConfigError, from_dict
from latentwire.encoders import EncoderArgs, build_encoder
from latentwire.encoders.pooled import group_bounds, group_weights, n_groups, prepend
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import LatentArgs
from latentwire.latent.prompts import donor_map, encode_views, latent_prompt_maker
from latentwire.prompt import PromptArgs, content_text
from latentwire.scaffold_cache import scaffold_cache_off

TEXTS = ["Paris is the capital and largest city of France, on the Seine.", "The quick brown fox jumps."]
QUESTIONS = ["What is the capital of France?", "Who jumps?"]
TEMPLATE = "Question: {question}\n"
CTX = PromptArgs(replaces="context", content_template="{context}", user_template="{content}\nQ: {question}")
VIEWS = [{"question": q, "context": c} for q, c in zip(QUESTIONS, TEXTS)]


single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _enc(lm, wire_slots=8, **kw):
    base = dict(name="pooled-lm", source_model=lm.spec.name, d_z=32, drop_last=0, train_layers=1)
    torch.manual_seed(0)
    return build_encoder(
        EncoderArgs(**{**base, "question_template": TEMPLATE, **kw}), wire_slots, {lm.spec.name: lm}
    )


def test_prepend_puts_each_prefix_before_its_content():
    pre = torch.tensor([[7, 8, 0], [9, 0, 0]])
    ids = torch.tensor([[1, 2], [3, 0]])
    out, mask, off = prepend(pre, pre > 0, ids, ids > 0)
    assert out.tolist() == [[7, 8, 1, 2], [9, 3, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, False, False]] and off.tolist() == [2, 1]


def test_groups_start_after_the_offset_and_never_pool_it():
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[1, 10:] = False  # row 1: 10 tokens
    off = torch.tensor([4, 3])  # content lengths 10 and 7
    w, start, end, valid = group_weights(mask, 5, 4, "factor", off)  # (B, W, T)
    assert valid.sum(1).tolist() == [3, 2]  # ceil(10 / 4), ceil(7 / 4): content only
    assert start[0, :3].tolist() == [4, 8, 12] and end[0, :3].tolist() == [8, 12, 14]
    assert w[0, :, :4].abs().sum() == 0 and w[1, :, :3].abs().sum() == 0  # no slot pools the prefix
    s0, e0, _ = group_bounds(torch.tensor([10, 7]), 5, 4, "factor")
    assert torch.equal(start - off[:, None], s0) and torch.equal(end - off[:, None], e0)


@torch.no_grad()
def test_question_changes_z_but_not_the_slots(tiny_lm):
    enc = _enc(tiny_lm)
    assert enc.reads_questions
    _, mask = enc.tokenize(TEXTS)
    blind, z = enc(TEXTS), enc(TEXTS, questions=QUESTIONS)  # (B, W, d_z) each
    z_other = enc(TEXTS, questions=QUESTIONS[::-1])
    assert z.shape == blind.shape == (2, 8, 32)
    for i, L in enumerate(mask.sum(1).tolist()):
        m = n_groups(L, 8, 4, "factor")
        assert enc.filled_slots(TEXTS)[i] == m and enc.last_stats  # content-only slot count
        assert torch.equal(z[i, m:], enc.pad.expand(8 - m, -1))  # the same pad slots as without
        assert not torch.allclose(z[i, :m], blind[i, :m], atol=1e-4)  # the question is read
        assert not torch.allclose(z[i, :m], z_other[i, :m], atol=1e-4)  # and which one matters
    off = _enc(tiny_lm, question_template="")
    assert not off.reads_questions
    with pytest.raises(ValueError, match="2 questions for 1 texts"):
        enc(TEXTS[:1], questions=QUESTIONS)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_every_slot_reads_the_question_and_its_own_group(tiny_lm, bidirectional):
    """d slot / d token embedding with the prefix: every valid slot reads every question token (the
    question comes first, so the causal mask lets it too); the content as in test_pooled."""
    enc = _enc(tiny_lm, bidirectional=bidirectional)
    ids, mask = enc.tokenize(TEXTS)
    p_ids, p_mask = enc.tokenize([TEMPLATE.format(question=q) for q in QUESTIONS])
    ids, mask, off = prepend(p_ids, p_mask, ids, mask)
    e = tiny_lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    z = enc.encode_embeds(e, mask, off)
    _, _, end, valid = group_weights(mask, 8, 4, "factor", off)
    for i in range(2):
        L, p = int(mask[i].sum()), int(off[i])
        for m in range(int(valid[i].sum())):
            (g,) = torch.autograd.grad(z[i, m].pow(2).sum(), e, retain_graph=True)
            reads = g[i].abs().sum(-1) > 0  # (T,)
            assert reads[:p].all(), f"slot {m} misses a question token"
            upto = L if bidirectional else int(end[i, m])
            assert reads[p:upto].all() and not reads[upto:].any()


@pytest.fixture
def il(tiny_lm):
    cfg = {
        "n_shared": 6,
        "n_private": 0,
        "trim_pad": True,
        "encoder": {"name": "pooled-lm", "source_model": tiny_lm.spec.name, "d_z": 32, "drop_last": 0,
                    "train_layers": 1, "question_template": TEMPLATE},
        "adapter": {"kind": "linear2", "hidden": 32},
    }  # fmt: skip
    torch.manual_seed(0)
    return build_interlingua(
        from_dict(LatentArgs, cfg, where="latent"), [tiny_lm], torch.device("cpu")
    ).eval()


@torch.no_grad()
def test_interlingua_memo_keys_z_by_question_and_text(il):
    texts = [content_text(v, CTX) for v in VIEWS]
    fresh = il.encode(texts, questions=QUESTIONS)
    il.memoize_latents(True)
    try:
        first = il.encode(texts, questions=QUESTIONS)
        swapped = il.encode(texts, questions=QUESTIONS[::-1])  # same texts: must not hit the memo
        again = il.encode(texts, questions=QUESTIONS)
    finally:
        il.memoize_latents(False)
    assert torch.equal(first, fresh) and torch.equal(again, fresh)
    assert not torch.allclose(swapped, fresh, atol=1e-4)
    z, filled = encode_views(il, VIEWS, CTX)
    assert torch.equal(z, fresh) and filled == il.filled(texts)


@torch.no_grad()
def test_prompts_and_the_shuffled_control_encode_with_the_views_question(tiny_lm, il):
    seen = []
    encoder_forward = il.encoder.forward

    def spy(texts, questions=None):
        seen.append((list(texts), questions))
        return encoder_forward(texts, questions=questions)

    il.encoder.forward = spy
    try:
        with scaffold_cache_off():
            latent_prompt_maker(tiny_lm, il, CTX)(VIEWS)
            donors = donor_map(VIEWS)
            latent_prompt_maker(tiny_lm, il, CTX, control="shuffled", donors=donors)(VIEWS)
    finally:
        del il.encoder.forward
    texts = [content_text(v, CTX) for v in VIEWS]
    assert seen[0] == (texts, QUESTIONS)
    src = [donors[(v["question"], v["context"])] for v in VIEWS]  # the donor's question and text
    assert seen[1] == ([content_text(v, CTX) for v in src], [v["question"] for v in src])
    assert seen[1][1] != QUESTIONS


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "meanpool", "question_template": TEMPLATE}, "only for pooled-lm"),
        ({"name": "pooled-lm", "source_model": "m", "question_template": "Q: "}, "must contain"),
        ({"name": "pooled-lm", "source_model": "m", "max_question_tokens": 0}, "max_question_tokens"),
    ],
)
def test_config_refuses_a_bad_question_template(kw, match):
    with pytest.raises(ConfigError, match=f"latent.encoder.*{match}"):  # names the key path
        from_dict(EncoderArgs, kw, where="latent.encoder")
