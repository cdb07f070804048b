"""The workflow config's sections: sweep expansion into named experiment overrides (reading heads too)."""

import pytest

from latentwire.plan.sections import expand_sweep


def test_sweep_expands_into_named_experiments():
    exps = expand_sweep({"encoder": ["meanpool", "stq"], "n_shared": [16, 40], "seed": 1})
    assert sorted(exps) == [
        "sweep-enc_meanpool-shared_16-s_1",
        "sweep-enc_meanpool-shared_40-s_1",
        "sweep-enc_stq-shared_16-s_1",
        "sweep-enc_stq-shared_40-s_1",
    ]
    assert exps["sweep-enc_stq-shared_40-s_1"] == {
        "latent": {"encoder": {"name": "stq"}, "n_shared": 40},
        "train": {"seed": 1},
    }
    with pytest.raises(Exception, match="unknown axis"):
        expand_sweep({"lr": [1e-3]})
    assert expand_sweep({}) == {}


def test_head_sweep_sets_every_reading_head_field():
    exps = expand_sweep({"head": ["shallow", "deep+lora", "shallow+deep"]})
    assert exps["sweep-head_deep+lora"] == {
        "latent": {"shallow": False, "deep_prefix": {"enabled": True}, "lora": {"rank": 8}}
    }
    assert exps["sweep-head_shallow"]["latent"]["deep_prefix"] == {"enabled": False}
    assert exps["sweep-head_shallow+deep"]["latent"]["shallow"] is True
    with pytest.raises(Exception, match="head"):
        expand_sweep({"head": ["wide"]})
