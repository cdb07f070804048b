"""The latent runs' stage wildcards: each run's cell (encoder, M, d_z, head, preset, seed), the job
wildcards mapped back to their run (and refused where the settings differ), the folders every
reader of a checkpoint or an evaluation follows, and experiments that list several seeds."""

import copy
from pathlib import Path

import pytest
import yaml

from latentwire.config import ConfigError
from latentwire.plan import paths
from latentwire.plan.stages import LatentCell, expand_seeds, latent_cells
from latentwire.workflow import WorkflowPlan

TEST = Path(__file__).resolve().parents[2] / ".test" / "config"
BASE = {**yaml.safe_load((TEST / "config.yaml").read_text()), "registry": str(TEST / "models.yaml")}
SELECT = "results/latent/squad/select/M8-dz16/shallow/select/seed0"


def plan_with(**experiments) -> WorkflowPlan:
    cfg = copy.deepcopy(BASE)
    cfg["latent"]["experiments"].update(experiments)
    return WorkflowPlan.from_config(cfg)


def test_each_run_sits_in_the_cell_its_settings_give():
    plan = plan_with()
    assert plan.cells["select"] == LatentCell("select", 8, 16, "shallow", "select", 0)
    assert plan.cells["meanpool"].M == 6  # n_shared 4 + n_private 2: what a receiver reads
    assert plan.checkpoint("squad", "select") == f"{SELECT}/stage_b/best.safetensors"
    assert plan.eval_dir("squad", "select") == f"{SELECT}/stage_c"
    assert plan.select_windows_inputs("squad")["checkpoint"] == plan.checkpoint("squad", "select")
    assert plan.extension_inputs("squad", "select")["checkpoint"] == plan.checkpoint("squad", "select")
    assert (
        plan.extension_reference("squad", "select")[0] == f"{SELECT}/stage_c/tiny-llama/latent/metrics.json"
    )
    assert f"{SELECT}/stage_b/train_log.jsonl" in plan.train_logs()
    assert f"{SELECT}/stage_c/joint.json" in plan.final_outputs()
    assert plan.cell_values("preset") == ["meanpool", "select"]


def test_job_wildcards_map_back_to_their_run_and_must_match_its_settings():
    plan = plan_with()
    wildcards = {"dataset": "squad", **plan.cells["select"].wildcards()}
    assert plan.run_at(wildcards) == "select"
    assert paths.latent_dir(**wildcards) == SELECT
    with pytest.raises(ConfigError, match="sits at"):
        plan.run_at({**wildcards, "M": 16})
    with pytest.raises(ConfigError, match="no latent run"):
        plan.run_at({**wildcards, "seed": 3})


def test_two_presets_on_the_same_axes_differ_by_their_name_in_the_path():
    plan = plan_with(**{"meanpool-lr": {"train": {"lr": 0.01}}})
    a, b = plan.run_dir("squad", "meanpool"), plan.run_dir("squad", "meanpool-lr")
    assert a != b and a.rsplit("/", 2)[0] == b.rsplit("/", 2)[0]
    assert b.endswith("/meanpool-lr/seed0")


def test_an_experiment_listing_seeds_is_one_run_per_seed():
    plan = plan_with(multi={"seeds": [0, 2]})
    assert [e for e in plan.experiments if e.startswith("multi")] == ["multi-s0", "multi-s2"]
    assert plan.experiments["multi-s2"].train.seed == 2
    assert plan.cells["multi-s2"].preset == "multi" and plan.cells["multi-s2"].seed == 2
    assert plan.run_dir("squad", "multi-s2").endswith("/multi/seed2")
    assert plan.run_at({"dataset": "squad", **plan.cells["multi-s0"].wildcards()}) == "multi-s0"
    assert expand_seeds("x", {"latent": {}}) == {"x": ("x", {"latent": {}})}
    for bad in ([], [1, 1], "0", [-1]):
        with pytest.raises(ConfigError, match="seeds"):
            expand_seeds("x", {"seeds": bad})
    with pytest.raises(ConfigError, match="no train.seed"):
        expand_seeds("x", {"seeds": [0], "train": {"seed": 1}})
    with pytest.raises(ConfigError, match="also an experiment"):
        plan_with(multi={"seeds": [0]}, **{"multi-s0": {}})


def test_two_runs_in_one_cell_are_refused():
    cfg = copy.deepcopy(BASE)
    cfg["latent"]["sweep"] = {"seed": [0]}  # sweep-s_0: meanpool's settings, another preset: fine
    assert "sweep-s_0" in WorkflowPlan.from_config(cfg).cells
    plan = plan_with()
    with pytest.raises(ConfigError, match="same run"):
        latent_cells({"a": plan.experiments["meanpool"], "b": plan.experiments["meanpool"]}, {"b": "a"})


def test_joint_files_pair_with_their_datasets_when_there_are_several():
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["other"] = cfg["datasets"]["squad"]
    plan = WorkflowPlan.from_config(cfg)
    pairs = list(zip(plan.joint_files(), plan.joint_datasets()))
    assert len(pairs) == 2 * 3  # 2 datasets x (meanpool, select, select+tiny-gemma)
    assert all(f.split("/")[2] == d for f, d in pairs), pairs
