"""The ``select`` encoder: which tokens it keeps, that evaluation reads nothing gold-derived, the
scorer's own loss and gradients, the identity start, and trainable-only checkpoints.

Every test that takes ``tiny_lm`` runs once per tiny family (Llama- and Qwen2-shaped).
"""

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentwire.encoders import EncoderArgs, build_encoder, load_trainable_state_dict, trainable_state_dict
from latentwire.encoders.select import SelectEncoder, answer_char_start
from latentwire.latent.interlingua import Interlingua, LatentArgs

M, D_Z = 6, 16
FILLER = " ".join(f"Item {i} is listed here for the record." for i in range(12))
TEXTS = [
    f"Question: Who wrote Hamlet?\nContext: {FILLER} Hamlet is a tragedy by William Shakespeare.",
    f"Question: Where is Kyoto?\nContext: Kyoto is a city in Japan. {FILLER}",
    f"Question: What boils at 100 degrees?\nContext: {FILLER[:200]} Water boils at 100 degrees. {FILLER}",
]
ANSWERS = [["William Shakespeare"], ["Japan"], ["Water"]]


def build(lm, seed: int = 0, **kw) -> SelectEncoder:
    torch.manual_seed(seed)
    args = EncoderArgs(name="select", d_z=D_Z, n_heads=4, source_model=lm.spec.name, **kw)
    return build_encoder(args, M, {lm.spec.name: lm})


def test_answer_char_start_takes_answers_in_order_and_skips_the_head():
    text = "Question: Is Paris big?\nContext: Paris is big."
    after = text.index("\n")
    assert answer_char_start(text, ["Paris"], after) == text.index("Paris is")
    assert answer_char_start(text, ["nowhere", " big. "], after) == text.index("big.")
    assert answer_char_start(text, ["London", ""], after) == -1


def test_kept_tokens_are_head_then_a_clamped_window(tiny_lm):
    enc = build(tiny_lm, select_lead=0.5)
    assert enc._kept(2, 40, 20) == [0, 1, 20 - 2, 19, 20, 21]  # W = 4, two before the start
    assert enc._kept(2, 40, 3) == [0, 1, 2, 3, 4, 5]  # clamped after the head
    assert enc._kept(2, 40, 39) == [0, 1, 36, 37, 38, 39]  # clamped at the end
    assert enc._kept(2, 5, 3) == [0, 1, 2, 3, 4]  # short text: everything, padded later


def test_head_is_the_question_and_at_most_half_the_slots(tiny_lm):
    enc = build(tiny_lm)
    text = "Question: Why?\nContext: Because."
    enc_ = tiny_lm.tokenizer(text, return_offsets_mapping=True)
    n = enc._head_len(text, enc_["offset_mapping"])
    assert 1 <= n <= M // 2
    head_text = tiny_lm.tokenizer.decode(enc_["input_ids"][:n])
    assert "Context" not in head_text
    assert build(tiny_lm, head_marker="")._head_len(text, enc_["offset_mapping"]) == 0


def test_shape_and_finite_on_short_and_empty_texts(tiny_lm):
    enc = build(tiny_lm).eval()
    z = enc([*TEXTS, "", "x"])
    assert z.shape == (5, M, D_Z) and z.dtype == torch.float32 and torch.isfinite(z).all()


def test_evaluation_never_reads_the_answers(tiny_lm):
    enc = build(tiny_lm, teacher_window=1.0).eval()
    with torch.no_grad():
        assert torch.equal(enc(TEXTS, answers=ANSWERS), enc(TEXTS))
    assert enc.aux_loss is None
    # the Interlingua hands answers over only when asked to (training), and evaluation never does
    il = Interlingua(
        LatentArgs(
            n_shared=M,
            n_private=0,
            encoder=EncoderArgs(name="select", d_z=D_Z, n_heads=4, source_model=tiny_lm.spec.name),
        ),
        {tiny_lm.spec.name: (tiny_lm.model.config.hidden_size, 1.0)},
        {tiny_lm.spec.name: tiny_lm},
    ).eval()
    with torch.no_grad():
        assert torch.equal(il.encode(TEXTS, answers=ANSWERS), il.encode(TEXTS))


def test_teacher_windows_move_to_the_gold_answer_in_training(tiny_lm):
    enc = build(tiny_lm, teacher_window=1.0, select_features="embed").train()
    ids, mask, offsets = enc._tokenize(TEXTS)
    gold = [enc._gold_token(t, o, a) for t, o, a in zip(TEXTS, offsets, ANSWERS)]
    assert all(g > 0 for g in gold)
    with torch.no_grad():
        z_gold = enc(TEXTS, answers=ANSWERS)
        for i, t in enumerate(TEXTS):  # slot j holds the projection of kept token j (+ slot embedding)
            n_head = enc._head_len(t, offsets[i])
            kept = enc._kept(n_head, int(mask[i].sum()), gold[i])
            assert gold[i] in kept
            feats = enc.token_proj(enc.source.embed(ids[i : i + 1]).float())[0]  # (T, d_z)
            torch.testing.assert_close(z_gold[i], feats[kept] + enc.slot_emb)
    assert enc.last_stats["found"] == 1.0


def test_scorer_learns_from_its_own_loss_and_the_source_model_stays_frozen(tiny_lm):
    enc = build(tiny_lm).train()
    z = enc(TEXTS, answers=ANSWERS)
    assert enc.aux_loss is not None and torch.isfinite(enc.aux_loss)
    (z * torch.randn_like(z)).sum().backward()
    assert all(p.grad is None for p in enc.scorer.parameters())  # argmax: no gradient through Z
    assert enc.token_proj[1].weight.grad.abs().sum() > 0 and enc.slot_emb.grad.abs().sum() > 0
    enc.aux_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.scorer.parameters())
    assert all(p.grad is None and not p.requires_grad for p in tiny_lm.model.parameters())
    # a few steps on the scorer alone lower its loss
    opt = torch.optim.Adam(enc.scorer.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        enc(TEXTS, answers=ANSWERS)
        enc.aux_loss.backward()
        opt.step()
        losses.append(float(enc.aux_loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_identity_start_sends_the_source_embeddings(tiny_lm):
    d = tiny_lm.model.config.hidden_size
    torch.manual_seed(0)
    args = EncoderArgs(name="select", d_z=d, n_heads=4, source_model=tiny_lm.spec.name)
    enc = build_encoder(args, M, {tiny_lm.spec.name: tiny_lm}).eval()
    with torch.no_grad():
        z = enc(TEXTS[:1])
        ids, _, _ = enc._tokenize(TEXTS[:1])
        table = tiny_lm.model.get_input_embeddings().weight
        # every slot is exactly one row of the source model's embedding table
        dist = torch.cdist(z[0], table.float())  # (M, V)
        assert torch.allclose(dist.min(1).values, torch.zeros(M), atol=1e-3)  # others: > 0.1
        assert set(dist.argmin(1).tolist()) <= set(ids[0].tolist())


def test_trainable_state_dict_round_trip(tiny_lm, tmp_path):
    enc = build(tiny_lm, seed=0)
    with torch.no_grad():
        enc.slot_emb.normal_()
    sd = trainable_state_dict(enc)
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for p in enc.parameters() if p.requires_grad)
    assert not any("embed_tokens" in k for k in sd)
    save_file(sd, str(tmp_path / "enc.safetensors"))
    fresh = build(tiny_lm, seed=1).eval()
    enc.eval()
    with torch.no_grad():
        want = enc(TEXTS)
        assert not torch.equal(fresh(TEXTS), want)
        load_trainable_state_dict(fresh, load_file(str(tmp_path / "enc.safetensors")))
        assert torch.equal(fresh(TEXTS), want)


@pytest.mark.parametrize("bad", [{"select_lead": 1.5}, {"teacher_window": -0.1}, {"select_hidden": 0}])
def test_args_are_validated(bad, tiny_lm):
    with pytest.raises(Exception, match="select_lead|teacher_window|select_hidden"):
        build(tiny_lm, **bad)


def test_overlap_indicator_marks_every_piece_of_question_words_after_the_head():
    from latentwire.encoders.select import content_words, overlap_indicator

    assert content_words("Who wrote the play Hamlet?") == {"wrote", "play", "hamlet"}
    text = "Q: Who wrote Hamlet?\nShakespeare wrote Hamlet in 1600."
    cut = text.index("\n")
    offsets = [(0, 2), (3, 6), (7, 12), (13, 20), (21, 27), (27, 32), (33, 38), (39, 45), (46, 48)]
    ind = overlap_indicator(text, offsets, 2, cut)
    assert ind[:2] == [0.0, 0.0]  # head tokens never count
    assert ind[6] == 1.0 and ind[7] == 1.0  # "wrote", "Hamlet" in the context
    assert ind[4] == 0.0 and ind[5] == 0.0  # "Shakes", "peare": not a question word
    assert overlap_indicator(text, offsets, 0, -1) == [0.0] * len(offsets)  # no head: no prior


def test_lexical_prior_alone_puts_the_window_on_the_question_words(tiny_lm):
    enc = build(tiny_lm, lexical_prior=5.0, lexical_window=4).eval()
    with torch.no_grad():
        enc.scorer[-1].weight.zero_()  # the learned part says nothing
        enc.scorer[-1].bias.zero_()
    filler = " ".join(["lorem ipsum dolor sit amet"] * 8)
    text = (
        f"Question: Which river crosses Prague?\nContext: {filler} The Vltava river crosses Prague. {filler}"
    )
    ids, mask, offsets = enc._tokenize([text])
    n_head = enc._head_len(text, offsets[0])
    dens = enc._overlap_density([text], offsets, [n_head], ids.shape[1])
    assert float(dens.max()) == pytest.approx(1.0)
    c = int(dens[0].argmax())  # the densest stretch is the answer sentence (tiny tokens are short)
    sentence = text.index("The Vltava"), text.index("Prague.") + len("Prague")
    assert sentence[0] <= offsets[0][c][0] < sentence[1]
    with torch.no_grad():  # and the encoder's window is placed there
        assert enc(["x", text]).shape == (2, M, D_Z)
    kept = enc._kept(n_head, int(mask.sum()), c)
    assert any(sentence[0] <= offsets[0][j][0] < sentence[1] for j in kept[n_head:])
    assert "lex_weight" in trainable_state_dict(enc)
    assert "lex_weight" not in trainable_state_dict(build(tiny_lm, lexical_prior=0.0))


def test_kept_tokens_are_the_slots_of_the_latent(tiny_lm):
    """kept_tokens reports exactly the tokens whose embeddings forward() puts in the slots (eval mode)."""
    enc = build(tiny_lm).eval()
    kept = enc.kept_tokens(TEXTS)
    z = enc(TEXTS)  # (B, M, d_z): with the identity start, slot j = embedding of kept token j + slot_j
    emb = tiny_lm.model.get_input_embeddings().weight
    for i, k in enumerate(kept):
        assert len(k["ids"]) == len(k["spans"]) == M and 0 < k["n_head"] <= M // 2
        expect = enc.token_proj(emb[k["ids"]].float()) + enc.slot_emb
        assert torch.allclose(z[i], expect, atol=1e-5)
        for tid, (s, e) in zip(k["ids"], k["spans"]):  # the spans are those tokens' characters
            assert tiny_lm.tokenizer.decode([tid]).strip() in TEXTS[i][s:e] or not TEXTS[i][s:e].strip()
    enc.train()
    assert enc.kept_tokens(TEXTS) == kept and enc.training  # no gold, and the mode is restored
