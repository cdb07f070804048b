"""The rivals plan: comparators at every latent M, select-text from the select experiment, tuned ceilings."""

import pytest

from latentwire.config import ConfigError, from_dict
from latentwire.evaluation.evaluate import EvalArgs
from latentwire.plan.rivals import ComparatorArgs, rival_baselines, select_source, tuned_args, tuned_kinds
from latentwire.prompt import PromptArgs
from latentwire.training.args import LatentRunArgs


def _runs():
    select = {
        "latent": {
            "n_shared": 48,
            "n_private": 0,
            "encoder": {"name": "select", "source_model": "q", "d_z": 8},
        },
        "loss": {"w_answer": 1.0, "w_first": 0.5, "w_kd": 0.5},
        "train": {"steps": 550, "encoder_warmup_steps": 150, "batch_size": 32, "lr": 3e-4, "seed": 0},
    }
    pooled = {"latent": {"n_shared": 24, "n_private": 8}}
    return {
        "sel": from_dict(LatentRunArgs, select, where="x"),
        "pool": from_dict(LatentRunArgs, pooled, where="y"),
    }


def test_rivals_at_every_latent_m_and_select_text_only_at_the_select_m():
    names = rival_baselines(ComparatorArgs(), _runs())
    assert names == [
        "budget-32", "tail-32", "lexical-32", "selfinfo-32", "oracle-32",
        "budget-48", "tail-48", "lexical-48", "selfinfo-48", "select-text-48", "oracle-48",
    ]  # fmt: skip
    assert rival_baselines(ComparatorArgs(kinds=["tail"]), _runs()) == [
        "budget-32",
        "tail-32",
        "budget-48",
        "tail-48",
    ]


def test_select_source_must_be_a_select_experiment():
    assert select_source(ComparatorArgs(), _runs()) == "sel"
    with pytest.raises(ConfigError, match="select_from"):
        select_source(ComparatorArgs(select_from="pool"), _runs())


def test_tuned_ceiling_copies_the_stage_b_schedule_without_kd():
    args = from_dict(ComparatorArgs, {"tuned": {"like": "sel", "seeds": [0, 1, 2]}}, where="comparators")
    assert tuned_kinds(args, _runs()) == ["text", "select-text-48"]
    t = tuned_args(args, _runs(), "select-text-48", 2, PromptArgs(), EvalArgs())
    assert t.train.steps == 400 and t.train.batch_size == 32 and t.train.lr == 3e-4 and t.train.seed == 2
    assert t.loss.w_answer == 1.0 and t.loss.w_first == 0.5 and t.loss.w_kd == 0.0
    assert t.lora.rank == 8 and t.system == "select-text-48-tuned"
    with pytest.raises(ConfigError, match="like"):
        tuned_kinds(from_dict(ComparatorArgs, {"tuned": {"like": "nope"}}, where="c"), _runs())
    with pytest.raises(ConfigError, match="kinds"):
        from_dict(ComparatorArgs, {"kinds": ["random"]}, where="comparators")


def test_a_tuned_ceiling_like_an_experiment_without_stage_b_fails_at_parse_time():
    """Its Stage B schedule would have 0 steps: refused when the plan is built, not in the job."""
    runs = _runs()
    runs["sel"].train.encoder_warmup_steps = runs["sel"].train.steps
    args = from_dict(ComparatorArgs, {"tuned": {"like": "sel"}}, where="comparators")
    with pytest.raises(ConfigError, match=r"comparators\.tuned\.like: 'sel' has no Stage B steps .* 550"):
        tuned_kinds(args, runs)
