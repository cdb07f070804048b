"""Strict typed configs (``from_dict``) and every YAML shipped in config/ and .test/config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
import torch
import yaml

from latentwire.config import ConfigError, from_dict, load_yaml, merge_configs, to_dict
from latentwire.evaluation.baselines import BaselineArgs
from latentwire.evaluation.evaluate import EvalArgs
from latentwire.models import load_registry
from latentwire.training.args import TrainArgs
from latentwire.workflow import WorkflowPlan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MAIN = REPO / "config" / "config.yaml"


@dataclass
class Inner:
    size: int
    rate: float = 0.5

    def validate(self) -> None:
        if self.size < 0:
            raise ValueError("size must be >= 0")


@dataclass
class Outer:
    name: str
    inner: Inner
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    flag: bool = False


def test_from_dict_builds_nested_dataclasses_with_defaults():
    cfg = from_dict(Outer, {"name": "x", "inner": {"size": 3}})
    assert cfg == Outer(name="x", inner=Inner(size=3, rate=0.5))


def test_from_dict_coerces_containers_and_numbers():
    cfg = from_dict(
        Outer,
        {
            "name": "x",
            "inner": {"size": 1, "rate": 2},
            "tags": ["p", "q"],
            "weights": {"a": 1, "b": 0.5},
            "shape": [2, 3],
            "limit": 7,
            "flag": True,
        },
    )
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.weights == {"a": 1.0, "b": 0.5} and all(isinstance(v, float) for v in cfg.weights.values())
    assert cfg.shape == (2, 3)
    assert cfg.tags == ["p", "q"]
    assert cfg.limit == 7
    assert cfg.flag is True


def test_optional_accepts_none_and_its_type_only():
    assert from_dict(Outer, {"name": "x", "inner": {"size": 1}, "limit": None}).limit is None
    with pytest.raises(ConfigError, match=r"^cfg\.limit: 'ten' matches none of"):
        from_dict(Outer, {"name": "x", "inner": {"size": 1}, "limit": "ten"}, where="cfg")


def test_unknown_key_names_its_full_path():
    with pytest.raises(ConfigError, match=r"^cfg\.inner\.sizee: unknown key.*allowed: rate, size"):
        from_dict(Outer, {"name": "x", "inner": {"size": 1, "sizee": 2}}, where="cfg")
    with pytest.raises(ConfigError, match=r"^eval\.batch_sizee: unknown key"):
        from_dict(EvalArgs, {"batch_sizee": 4}, where="eval")


def test_missing_required_key_names_its_path():
    with pytest.raises(ConfigError, match=r"^cfg\.inner\.size: required key is missing"):
        from_dict(Outer, {"name": "x", "inner": {}}, where="cfg")
    with pytest.raises(ConfigError, match=r"^cfg\.inner: required key is missing"):
        from_dict(Outer, {"name": "x"}, where="cfg")


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"name": 3}, r"^cfg\.name: expected a string, got 3"),
        ({"inner": {"size": "3"}}, r"^cfg\.inner\.size: expected an integer, got '3'"),
        ({"inner": {"size": 1.5}}, r"^cfg\.inner\.size: expected an integer"),
        ({"inner": {"size": True}}, r"^cfg\.inner\.size: expected an integer, got True"),
        ({"inner": {"size": 1, "rate": False}}, r"^cfg\.inner\.rate: expected a number"),
        ({"inner": {"size": 1, "rate": "0.1"}}, r"^cfg\.inner\.rate: expected a number"),
        ({"flag": "yes"}, r"^cfg\.flag: expected true/false, got 'yes'"),
        ({"flag": 1}, r"^cfg\.flag: expected true/false"),
        ({"inner": [1]}, r"^cfg\.inner: expected a mapping, got list"),
        ({"tags": "p"}, r"^cfg\.tags: expected a list, got str"),
        ({"tags": ["p", 3]}, r"^cfg\.tags\[1\]: expected a string"),
        ({"weights": [1.0]}, r"^cfg\.weights: expected a mapping"),
        ({"weights": {"a": "heavy"}}, r"^cfg\.weights\.a: expected a number"),
        ({"shape": [1, "2"]}, r"^cfg\.shape\[1\]: expected an integer"),
        ({"mode": "c"}, r"^cfg\.mode: 'c' is not one of \['a', 'b'\]"),
    ],
)
def test_wrong_types_name_the_key(patch, message):
    data = {"name": "x", "inner": {"size": 1}, **patch}
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data, where="cfg")


def test_validate_hooks_run_and_errors_name_the_dataclass_path():
    with pytest.raises(ConfigError, match=r"^cfg\.inner: size must be >= 0"):
        from_dict(Outer, {"name": "x", "inner": {"size": -1}}, where="cfg")
    with pytest.raises(ConfigError, match=r"^eval: batch_size and max_new_tokens must be >= 1"):
        from_dict(EvalArgs, {"batch_size": 0}, where="eval")
    with pytest.raises(ConfigError, match=r"^baseline: baseline 'budget': expected text, closed, or budget"):
        from_dict(BaselineArgs, {"name": "budget"}, where="baseline")


def test_top_level_must_be_a_mapping_and_none_means_defaults():
    with pytest.raises(ConfigError, match=r"^eval: expected a mapping, got list"):
        from_dict(EvalArgs, [1], where="eval")
    assert from_dict(EvalArgs, None) == EvalArgs()


def test_to_dict_round_trips_through_from_dict():
    cfg = from_dict(Outer, {"name": "x", "inner": {"size": 1}, "shape": [4], "weights": {"w": 2.0}})
    plain = to_dict(cfg)
    assert plain["shape"] == [4]  # JSON form
    assert json.loads(json.dumps(plain)) == plain
    assert from_dict(Outer, plain) == cfg


def test_load_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: not valid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nope.yaml'}: config file not found"):
        load_yaml(tmp_path / "nope.yaml")


# --- every shipped YAML parses and validates -------------------------------------------------


def _shipped_yamls() -> list[Path]:
    return sorted((REPO / "config").rglob("*.yaml")) + sorted((REPO / ".test" / "config").rglob("*.yaml"))


def _validate_workflow_config(path: Path, monkeypatch, overlay: Path | None = None) -> WorkflowPlan:
    """What ``common.smk`` does at parse time: JSON schema (with defaults), then the strict plan;
    ``overlay`` is merged on top as ``snakemake --configfile path overlay`` would."""
    config = load_yaml(path)
    if overlay is not None:
        config = merge_configs(config, load_yaml(overlay))
    jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text())).validate(config)
    monkeypatch.chdir(path.parent.parent)  # the workflow runs with --directory at this folder
    return WorkflowPlan.from_config(config)


@pytest.mark.parametrize("path", _shipped_yamls(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_validates(path: Path, monkeypatch):
    raw = load_yaml(path)
    assert isinstance(raw, dict), f"{path}: top level must be a mapping"
    if "registry" in raw:  # a workflow config
        plan = _validate_workflow_config(path, monkeypatch)
        assert plan.models and plan.datasets and plan.baselines
        for name in plan.baselines:  # every job's settings rebuild strictly
            from_dict(BaselineArgs, json.loads(plan.baseline_json(name)), where=name)
    elif isinstance(raw.get("models"), dict):  # a model registry
        specs = load_registry(path)
        assert sorted(specs) == sorted(raw["models"])
    elif path.parent == REPO / "config" and set(raw) <= set(yaml.safe_load(SCHEMA.read_text())["properties"]):
        # an overlay of the main config (snakemake --configfile config/config.yaml [BASE ...] OVERLAY),
        # merged in the order its own header documents
        chain = _documented_chain(path)
        config = load_yaml(chain[0])
        for overlay in chain[1:]:
            config = merge_configs(config, load_yaml(overlay))
        jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text())).validate(config)
        monkeypatch.chdir(REPO)
        plan = WorkflowPlan.from_config(config)
        assert plan.experiments or plan.baselines
    else:
        pytest.fail(f"{path}: unknown kind of YAML; add its validation to this test")


def _documented_chain(path: Path) -> list[Path]:
    """The config files of the ``snakemake --configfile ...`` line in an overlay's header comment
    that names the overlay itself; config.yaml + the overlay when there is none."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words = line.lstrip("# ").split()
        if "--configfile" in words:
            files = [REPO / w for w in words[words.index("--configfile") + 1 :] if w.endswith(".yaml")]
            if files and files[-1] == path:
                return files
    return [MAIN, path]


def test_an_overlay_header_names_the_configs_it_merges_over():
    chain = _documented_chain(REPO / "config" / "gpu-pooled-s0.yaml")
    assert chain == [MAIN, REPO / "config" / "gpu-pooled.yaml", REPO / "config" / "gpu-pooled-s0.yaml"]
    assert _documented_chain(REPO / "config" / "gpu-pooled.yaml")[:1] == [MAIN]


def test_shipped_yamls_were_found():
    names = {str(p.relative_to(REPO)) for p in _shipped_yamls()}
    assert {"config/config.yaml", "config/models.yaml", ".test/config/config.yaml"} <= names


def test_main_config_models_are_in_its_registry():
    config = load_yaml(REPO / "config" / "config.yaml")
    specs = load_registry(REPO / config["registry"])
    assert set(config["models"]) <= set(specs)


def test_test_scenario_plan(monkeypatch):
    plan = _validate_workflow_config(REPO / ".test" / "config" / "config.yaml", monkeypatch)
    assert plan.models == ["tiny-llama", "tiny-qwen2"]
    assert plan.baselines[:4] == ["text", "budget-8", "budget-16", "closed"]
    # the rivals at the latents' M (meanpool 6, select 8) follow
    assert plan.baselines[4:] == ["budget-6", "tail-6", "lexical-6", "selfinfo-6", "oracle-6", "tail-8",
                                  "lexical-8", "selfinfo-8", "select-text-8", "oracle-8"]  # fmt: skip
    assert (
        len(plan.baseline_metrics()) == 28 + 9
    )  # tiny-gemma (added to select): text, budgets, closed, rivals at 8
    assert plan.extension_receivers() == ["tiny-gemma"] and plan.extensions["gemma"].exp == "select"
    assert plan.eval.device == "cpu" and plan.eval_split == "test"


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"eval": {"batch_sizee": 4}}, r"^eval\.batch_sizee: unknown key"),
        ({"eval": {"split": "dev"}}, r"^eval\.split: 'dev' is not one of"),
        ({"prompt": {"bos": "sometimes"}}, r"^prompt\.bos: 'sometimes' is not one of"),
        ({"models": ["tiny-llama", "gpt-9"]}, r"^models: \['gpt-9'\] not in registry"),
    ],
)
def test_workflow_plan_rejects_bad_configs(patch, message, monkeypatch):
    config = {**load_yaml(REPO / ".test" / "config" / "config.yaml"), **patch}
    monkeypatch.chdir(REPO / ".test")
    with pytest.raises(ConfigError, match=message):
        WorkflowPlan.from_config(config)


def test_workflow_plan_requires_all_splits(monkeypatch):
    config = load_yaml(REPO / ".test" / "config" / "config.yaml")
    config["datasets"]["squad"]["split"]["fractions"] = {"train": 0.5, "test": 0.5}
    monkeypatch.chdir(REPO / ".test")
    with pytest.raises(ConfigError, match=r"^datasets\.squad: must produce the splits"):
        WorkflowPlan.from_config(config)


def test_schema_rejects_unknown_top_level_keys():
    config = {**load_yaml(REPO / ".test" / "config" / "config.yaml"), "baseline": {"text": True}}
    with pytest.raises(jsonschema.ValidationError, match="'baseline' was unexpected"):
        jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text())).validate(config)


def test_merge_configs_updates_nested_mappings_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 1}
    over = {"a": {"y": {"q": 2}}, "b": [3], "d": {"z": 0}}
    assert merge_configs(base, over) == {
        "a": {"x": 1, "y": {"p": 1, "q": 2}},
        "b": [3],
        "c": 1,
        "d": {"z": 0},
    }
    assert base == {"a": {"x": 1, "y": {"p": 1}}, "b": [1, 2], "c": 1}  # inputs untouched


# Bad inputs a new user tried (issue 16): each fails when the workflow parses its config, naming the
# full key path and the bad value. The experiment's overrides are YAML text, read as Snakemake reads config files.
BAD_LATENT_DEFAULTS = [
    ("train: {eval_every: 0}", r"latent\.experiments\.meanpool\.train\.eval_every: must be >= 1, got 0"),
    ("train: {log_every: 0}", r"latent\.experiments\.meanpool\.train\.log_every: must be >= 1, got 0"),
    ("train: {lr: -1}", r"latent\.experiments\.meanpool\.train\.lr: must be a positive number, got -1"),
    ("train: {steps: -1}", r"latent\.experiments\.meanpool\.train\.steps: must be >= 1, got -1"),
    ("latent: {n_shared: -4}", r"latent\.experiments\.meanpool\.latent\.n_shared: must be >= 0, got -4"),
    (
        "latent: {encoder: {d_z: -8}}",
        r"latent\.experiments\.meanpool\.latent\.encoder\.d_z: must be >= 1, got -8",
    ),
    ("train: {lr: 1e-3}", r"latent\.experiments\.meanpool\.train\.lr: .*string '1e-3'.*1\.0e-3"),
    ("eval: {device: gpu}", r"latent\.experiments\.meanpool\.eval\.device: .*got 'gpu'"),
    (
        "train: {stage_b_models: [tiny-llama, nope]}",
        r"latent\.experiments\.meanpool\.train\.stage_b_models: \['tiny-llama', 'nope'\] names models outside",
    ),
    (
        "latent: {adapter: {hidden: 0}}",
        r"latent\.experiments\.meanpool\.latent\.adapter\.hidden: must be >= 1, got 0",
    ),
]


@pytest.mark.parametrize("override, message", BAD_LATENT_DEFAULTS, ids=[o for o, _ in BAD_LATENT_DEFAULTS])
def test_bad_latent_settings_fail_at_parse_time_with_key_path_and_value(override, message, monkeypatch):
    config = load_yaml(REPO / ".test" / "config" / "config.yaml")
    config["latent"]["experiments"]["meanpool"] = yaml.safe_load(override)
    monkeypatch.chdir(REPO / ".test")
    with pytest.raises(ConfigError, match=message):
        WorkflowPlan.from_config(config)


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="needs a torch built without CUDA")
def test_cuda_on_a_cpu_only_torch_fails_at_parse_time(monkeypatch):
    config = load_yaml(REPO / ".test" / "config" / "config.yaml")
    config["eval"]["device"] = "cuda"
    monkeypatch.chdir(REPO / ".test")
    with pytest.raises(ConfigError, match=r"^eval\.device: got 'cuda', but this torch .* without CUDA"):
        WorkflowPlan.from_config(config)


def test_a_yaml_exponent_read_as_a_string_gets_a_hint_and_a_dotted_one_is_a_number():
    with pytest.raises(ConfigError, match=r"^train\.lr: .*string '1e-3'.*write it with a dot"):
        from_dict(TrainArgs, yaml.safe_load("lr: 1e-3"), where="train")
    assert from_dict(TrainArgs, yaml.safe_load("lr: 1.0e-3"), where="train").lr == 1e-3
