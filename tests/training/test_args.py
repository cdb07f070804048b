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
