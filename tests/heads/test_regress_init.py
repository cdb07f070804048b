"""``adapter.init: regress``: the ridge fit, the exact linear2 rewrite, and the start it gives two tiny
receivers reading a pooled-lm wire (slots read as the mean embedding of the tokens they pool)."""

import pytest
import torch
from tiny_runs import CPU, TRAIN_DF, make_run, one_thread, two_receivers

from latentwire.config import ConfigError, from_dict
from latentwire.encoders import EncoderArgs
from latentwire.heads.adapters import AdapterArgs, build_adapter
from latentwire.heads.regress_init import fit_projectors, ridge_fit, set_linear2, span_targets
from latentwire.latent.build import build_interlingua
from latentwire.training.loop import regress_start

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
lms = pytest.fixture(scope="module")(two_receivers)


def test_ridge_fit_recovers_an_affine_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g)
    a = torch.randn(7, 3, generator=g)
    y = torch.cat([x, torch.ones(500, 1)], 1) @ a
    torch.testing.assert_close(ridge_fit(x, y, ridge=1e-9).float(), a, atol=1e-4, rtol=1e-4)


def test_set_linear2_computes_the_fitted_map_exactly_and_refuses_a_narrow_hidden():
    torch.manual_seed(0)
    body = build_adapter(AdapterArgs(kind="linear2", hidden=12, calibrate_rms=False), 8, 5, 1.0).body
    a = torch.randn(9, 5, dtype=torch.float64)
    set_linear2(body, a)
    z = torch.randn(4, 3, 8)
    torch.testing.assert_close(body(z), (torch.cat([z, torch.ones(4, 3, 1)], -1).double() @ a).float(),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    narrow = build_adapter(AdapterArgs(kind="linear2", hidden=4), 8, 5, 1.0).body
    with pytest.raises(ConfigError, match="hidden 4 must be >= d_z 8"):
        set_linear2(narrow, a)


def test_regress_only_with_linear2():
    with pytest.raises(ConfigError, match="init"):
        from_dict(AdapterArgs, {"kind": "mlp", "init": "regress"}, where="adapter").validate()


def _pooled_run(src, d_src: int, **enc):
    run = make_run()
    run.latent.n_shared, run.latent.n_private = 8, 0
    run.latent.adapter = AdapterArgs(
        kind="linear2", hidden=2 * d_src, dropout=0.0, init="regress", init_texts=8
    )
    run.latent.encoder = EncoderArgs(
        name="pooled-lm", source_model=src.spec.name, d_z=d_src, drop_last=0, train_layers=1,
        **{"pool_factor": 1, **enc},
    )  # fmt: skip
    return run


def test_regress_start_maps_each_slot_near_the_mean_embedding_of_its_tokens(lms):
    src = lms[1]  # the Qwen2-shaped tiny model is the encoder's source (and a receiver)
    emb = src.model.get_input_embeddings().weight
    run = _pooled_run(src, emb.shape[1])
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    texts = [str(c) for c in TRAIN_DF["context"][:4]]
    with torch.no_grad():
        z = il.encoder(texts)
        ids, w, valid = il.encoder.slot_groups(texts)
        target = (w @ emb[ids].float())[valid]  # (N, d): each slot's mean token embedding
        adapter = il.adapter(src.spec.name)
        own, scale = adapter.body, adapter.target_rms  # calibrated: the body is fitted to target / RMS
        before = (own(z)[valid] * scale - target).pow(2).mean()
        report = regress_start(il, run, lms, [], TRAIN_DF)
        after = (own(z)[valid] * scale - target).pow(2).mean()
    assert set(report) == {lm.spec.name for lm in lms}
    assert all(r["slots"] > 0 for r in report.values())
    assert after < 0.5 * before, (float(before), float(after))
    assert report[src.spec.name]["r2"] > 0.5


def test_regress_refuses_an_encoder_without_slot_groups(lms):
    run = _pooled_run(lms[1], 32)
    run.latent.encoder = EncoderArgs(name="byte", d_z=32, n_heads=4, n_layers=1, max_bytes=256)
    il = build_interlingua(run.latent, lms, CPU)
    with pytest.raises(ConfigError, match="slot groups"):
        fit_projectors(il, lms, lms[1], ["some text"])


def test_another_receiver_reads_its_own_tokens_of_each_slot(lms):
    """With the same tokenizer, the span targets of the non-source receiver are exactly the mean of
    its own embeddings of the tokens each slot pools (characters, not a shared-vocabulary map)."""
    src, other = lms[1], lms[0]
    run = _pooled_run(src, src.model.get_input_embeddings().weight.shape[1], pool_factor=3)
    il = build_interlingua(run.latent, lms, CPU)
    texts = [str(c) for c in TRAIN_DF["context"][:3]] + ["short"]
    ids, w, valid = il.encoder.slot_groups(texts)
    spans = il.encoder.slot_spans(texts)
    assert [len(s) for s in spans] == valid.sum(1).tolist()
    assert all(a < b for s in spans for a, b in s)
    emb = other.model.get_input_embeddings()
    want = (w @ emb(ids).float())[valid]  # (N, d)
    got = span_targets(other.tokenizer, emb, texts, spans)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    report = regress_start(il, run, lms, [], TRAIN_DF)
    assert report[other.spec.name]["targets"] == "own tokens"
    adapter = il.adapter(other.spec.name)  # calibrated: the body sits at unit scale, not the table's
    with torch.no_grad():
        body = adapter.body(il.encoder(texts))[valid]
        fit = (got - got.mean(0)).pow(2).mean().sqrt() / adapter.target_rms
        assert 0.3 < float((body - body.mean(0)).pow(2).mean().sqrt() / fit) < 3
    assert report[src.spec.name]["targets"] == "source tokens"


def test_span_targets_use_overlapping_tokens_else_the_nearest():
    class Tok:  # two-character tokens: "abcdef" -> ab | cd | ef
        def __call__(self, texts, add_special_tokens, return_offsets_mapping):
            assert not add_special_tokens and return_offsets_mapping
            return {"input_ids": [[0, 1, 2]], "offset_mapping": [[(0, 2), (2, 4), (4, 6)]]}

    emb = torch.nn.Embedding(3, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    got = span_targets(Tok(), emb, ["abcdef"], [[(1, 3), (4, 5), (6, 6)]])
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.5], [2.0, 2.0], [2.0, 2.0]]))


def test_pad_slots_are_fitted_to_read_as_nothing(lms):
    """Slots past a short text's end (the encoder's pad vector) start near zero for every receiver,
    not at the ridge intercept (a blurred mean token that derailed SmolLM2 on the CPU)."""
    src = lms[1]
    run = _pooled_run(src, src.model.get_input_embeddings().weight.shape[1])
    run.latent.n_shared = 48  # PF 1: most train contexts here are shorter, so they leave pad slots
    il = build_interlingua(run.latent, lms, CPU)
    report = regress_start(il, run, lms, [], TRAIN_DF)
    texts = ["short text", str(TRAIN_DF["context"].iloc[0])]
    _, _, valid = il.encoder.slot_groups(texts)
    assert (~valid).any() and all(r["pad_slots"] > 0 for r in report.values())
    with torch.no_grad():
        z = il.encoder(texts)
        for lm in lms:
            out = il.adapter(lm.spec.name).body(z)  # (B, W, d)
            pad, real = out[~valid].norm(dim=-1).mean(), out[valid].norm(dim=-1).mean()
            assert pad < 0.2 * real, (lm.spec.name, float(pad), float(real))
