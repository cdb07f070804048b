"""Latent run settings checked at parse time: combinations that cannot train fail naming the key."""

import pytest

from latentwire.config import from_dict
from latentwire.training.args import LatentRunArgs


def test_gist_weight_needs_the_head():
    with pytest.raises(Exception, match="gist_tokens"):
        from_dict(LatentRunArgs, {"loss": {"w_gist": 1.0}}, where="latent")


def test_grad_checkpointing_with_a_kv_prefix_is_a_config_error():
    cfg = {"train": {"grad_checkpointing": True}, "latent": {"deep_prefix": {"enabled": True}}}
    with pytest.raises(Exception, match="grad_checkpointing: not with a KV prefix"):
        from_dict(LatentRunArgs, cfg, where="latent")


def test_question_conditioning_needs_the_question_outside_the_content():
    enc = {"name": "pooled-lm", "source_model": "qwen", "question_template": "Question: {question}\n"}
    with pytest.raises(Exception, match="question_template: needs prompt.replaces: context"):
        from_dict(LatentRunArgs, {"latent": {"encoder": enc}}, where="latent")
    ctx = {
        "replaces": "context",
        "content_template": "Context: {context}",
        "user_template": "{content}\n\nQuestion: {question}",
    }
    ok = from_dict(LatentRunArgs, {"latent": {"encoder": enc}, "prompt": ctx}, where="latent")
    assert ok.latent.encoder.question_template
