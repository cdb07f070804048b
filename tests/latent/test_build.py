"""Building an interlingua for two tiny receivers: the source-vocabulary adapter start, and memoized
latents (encode each text once at evaluation, never while training).
"""

import pytest
import torch
from tiny_runs import CPU, TRAIN_DF, make_run, one_thread, two_receivers

from latentwire.config import ConfigError
from latentwire.encoders import EncoderArgs
from latentwire.evaluation.evaluate import model_view
from latentwire.latent.build import build_interlingua
from latentwire.prompt import content_text

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
lms = pytest.fixture(scope="module")(two_receivers)  # the two tiny receivers, built once per module


def test_source_vocab_init_fits_the_other_receivers_skip_and_checks_the_encoder(lms):
    src = lms[1]  # the Qwen2-shaped tiny model is the encoder's source
    d_src = src.model.get_input_embeddings().weight.shape[1]
    run = make_run()
    run.latent.n_shared, run.latent.n_private = 6, 0
    run.latent.adapter.init = "source_vocab"
    run.latent.encoder = EncoderArgs(name="select", d_z=d_src, n_heads=4, source_model=src.spec.name)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    from latentwire.heads.vocab_align import shared_vocab_map

    want, _ = shared_vocab_map(
        src.tokenizer, src.model.get_input_embeddings().weight,
        lms[0].tokenizer, lms[0].model.get_input_embeddings().weight,
    )  # fmt: skip
    other = il.adapters[lms[0].spec.name.replace(".", "_")].body
    own = il.adapters[src.spec.name.replace(".", "_")].body
    torch.testing.assert_close(other.skip.weight, want.T)
    if own.skip.weight.shape[0] == d_src:
        assert torch.equal(own.skip.weight, torch.eye(d_src))  # the source receiver reads Z as is
    assert other.raw_skip and not other.mlp[-1].weight.any()
    run.latent.encoder = EncoderArgs(name="byte", d_z=32, n_heads=4)
    with pytest.raises(ConfigError, match="source_vocab"):
        build_interlingua(run.latent, lms, CPU)


def test_memoized_latents_encode_each_text_once_and_equal_fresh_ones(lms):
    torch.manual_seed(0)
    il = build_interlingua(make_run().latent, lms, CPU).eval()
    texts = [content_text(model_view(e), make_run().prompt) for e in TRAIN_DF.to_dict("records")[:4]]
    with torch.no_grad():
        want = il.encode(texts)
        seen = []
        real = il.encoder.forward
        il.encoder.forward = lambda t: seen.append(list(t)) or real(t)
        il.memoize_latents()
        first = il.encode(texts[:2])
        again = il.encode([texts[1], texts[3], texts[0], texts[3]])
    assert seen == [texts[:2], [texts[3]]]  # only unseen texts, each once
    torch.testing.assert_close(first, want[:2])
    torch.testing.assert_close(again, want[[1, 3, 0, 3]])
    il.train()  # never while training
    il.encode(texts[:1])
    assert len(seen) == 3
