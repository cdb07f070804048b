"""input_embed_scale (latentwire/models/embed_scale.py): read from the model, checked on a probe id.

The tiny Gemma is the case that matters: its embedding layer multiplies rows by sqrt(64) = 8, so
soft tokens (which bypass the layer) must be calibrated 8x above the table's RMS.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from latentwire.latent.build import receiver_of
from latentwire.models import load_model, materialize
from latentwire.models.embed_scale import exposed_embed_scale, input_embed_scale, measured_embed_scale
from latentwire.models.loading import ModelError
from latentwire.models.tiny import save_tiny


@pytest.fixture(scope="module")
def gemma(make_local_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma")
    spec = make_local_spec("tiny-gemma", save_tiny("gemma", root / "model"), context_limit=1024)
    materialize(spec, root / "cache")
    return (
        spec,
        root / "cache" / "manifest.json",
        load_model(spec, root / "cache" / "manifest.json", device="cpu"),
    )


class _Model(nn.Module):
    """A stand-in with a config and an input-embedding layer."""

    def __init__(self, emb: nn.Module, **config) -> None:
        super().__init__()
        self.emb, self.config = emb, SimpleNamespace(**config)

    def get_input_embeddings(self) -> nn.Module:
        return self.emb


class _Shifted(nn.Embedding):
    def forward(self, ids):  # not a row times a constant
        return super().forward(ids) + 1.0


def test_gemma_scale_comes_from_the_model_and_reaches_the_soft_token_target(gemma):
    spec, _, lm = gemma
    assert spec.input_embed_scale is None and lm.spec.input_embed_scale == pytest.approx(8.0)
    assert not lm.uses_chat_template  # no chat template: the plain prompt path
    assert measured_embed_scale(lm.model)[0] == pytest.approx(8.0) and exposed_embed_scale(lm.model) == 8.0
    ids = torch.arange(3, 60)
    layer_rms = lm.model.get_input_embeddings()(ids).pow(2).mean(1).sqrt().mean()  # what real tokens carry
    assert receiver_of(lm, _latent_args()).embed_rms == pytest.approx(float(layer_rms), rel=0.05)


def test_a_registry_scale_is_checked_against_the_layer(gemma, make_local_spec):
    spec, manifest, _ = gemma
    assert (
        load_model(replace(spec, input_embed_scale=8.0), manifest, device="cpu").spec.input_embed_scale == 8.0
    )
    with pytest.raises(ModelError, match=r"'tiny-gemma': registry input_embed_scale says 1, .* by 8"):
        load_model(replace(spec, input_embed_scale=1.0), manifest, device="cpu")


def test_unscaled_families_resolve_to_one(tiny_lm):
    assert tiny_lm.spec.input_embed_scale == 1.0 and exposed_embed_scale(tiny_lm.model) is None


def test_a_config_scale_embedding_flag_is_the_exposed_scale():
    emb = nn.Embedding(10, 16)
    assert exposed_embed_scale(_Model(emb, scale_embedding=True, d_model=16)) == 4.0
    assert exposed_embed_scale(_Model(emb, scale_embedding=False, d_model=16)) == 1.0
    assert exposed_embed_scale(_Model(emb, hidden_size=16)) is None


def test_a_layer_that_is_not_a_scaled_lookup_is_refused():
    with pytest.raises(ModelError, match="not a table lookup times a constant"):
        measured_embed_scale(_Model(_Shifted(10, 16), hidden_size=16))


def test_a_model_outside_the_registry_gets_the_measured_scale(gemma):
    _, _, lm = gemma
    raw = replace(lm, spec=replace(lm.spec, input_embed_scale=None))  # e.g. a synthetic receiver
    assert input_embed_scale(raw) == pytest.approx(8.0)


def _latent_args():
    from latentwire.latent.interlingua import LatentArgs

    return LatentArgs()
