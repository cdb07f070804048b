"""Sections of the workflow config parsed into the run settings each job receives.

:meth:`latentwire.workflow.WorkflowPlan.from_config` calls these in order: ``datasets``, the configured
``baselines``, the latent experiments (``latent.experiments`` plus the ``latent.sweep`` product, less
``latent.drop``, each layered over ``latent.defaults`` and the top-level ``prompt`` / ``eval``) and the
encoder pretraining runs (``pretrain``). Every run config is built with the dataclasses the jobs use
(:func:`latentwire.config.from_dict`), so a typo fails here, naming the full key path, before any job
starts.
"""

from __future__ import annotations

import itertools
from typing import Any

from latentwire.config import ConfigError, from_dict, merge_configs, to_dict
from latentwire.data.prepare import DatasetArgs
from latentwire.encoders import source_model_name
from latentwire.models import ModelSpec
from latentwire.plan.stages import expand_seeds
from latentwire.prompt import PromptArgs
from latentwire.training.args import LatentRunArgs
from latentwire.training.pretrain import PretrainRunArgs
from latentwire.training.teacher import TeacherArgs

SPLITS = ("test", "train", "validation")

#: sweep axis -> (short name for experiment ids, path of the LatentRunArgs field it sets). ``M`` is
#: the slots each receiver reads (n_shared + n_private, what budget-M matches): it sets n_shared to
#: M − n_private once the experiment's n_private is known (READ_SLOTS marks it until then).
READ_SLOTS = "_read_slots"
SWEEP_AXES = {
    "encoder": ("enc", ("latent", "encoder", "name")),
    "M": ("M", (READ_SLOTS,)),
    "n_shared": ("shared", ("latent", "n_shared")),
    "d_z": ("dz", ("latent", "encoder", "d_z")),
    "seed": ("s", ("train", "seed")),
}


def fold_datasets(name: str, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A dataset whose ``split`` sets ``folds: k`` and no ``fold`` stands for k datasets
    ``{name}_f0`` … ``{name}_f{k-1}`` (article-level k-fold, fold i tested in the i-th): every rule
    runs per fold, and the tables pool the folds under ``name`` (:func:`dataset_label`)."""
    split = raw.get("split") or {}
    folds = split.get("folds", 0)
    if not isinstance(folds, int) or folds < 2 or "fold" in split:
        return {name: raw}
    return {f"{name}_f{i}": {**raw, "split": {**split, "fold": i}} for i in range(folds)}


def dataset_label(name: str, ds: DatasetArgs) -> str:
    """The name the tables report a dataset under: a k-fold dataset's base name, so that the folds'
    rows pool into one row per system (each question tested once); else the dataset's own name."""
    suffix = f"_f{ds.split.fold}"
    return name.removesuffix(suffix) if ds.split.folds and name.endswith(suffix) else name


def parse_datasets(config: dict[str, Any]) -> dict[str, DatasetArgs]:
    """``datasets:`` → validated :class:`DatasetArgs` (k-fold ones expanded, :func:`fold_datasets`);
    each must produce the three splits."""
    datasets = {}
    expanded = {n: r for name, raw in config["datasets"].items() for n, r in fold_datasets(name, raw).items()}
    for name, raw in expanded.items():
        ds = from_dict(DatasetArgs, {"name": name, **raw}, where=f"datasets.{name}")
        produced = {s.assign_split for s in ds.sources if s.assign_split} | set(ds.split.fractions)
        if produced != set(SPLITS):
            raise ConfigError(
                f"datasets.{name}: must produce the splits {list(SPLITS)}, got {sorted(produced)}"
            )
        datasets[name] = ds
    return datasets


def configured_baselines(config: dict[str, Any]) -> list[str]:
    """The ``baselines:`` section's systems: text, the token budgets, closed book (no rivals yet)."""
    b = config.get("baselines") or {}
    names = (["text"] if b.get("text", True) else []) + [
        f"budget-{m}" for m in b.get("budgets", [16, 32, 48])
    ]
    return names + (["closed"] if b.get("closed_book", True) else [])


def parse_experiments(
    config: dict[str, Any], registry: dict[str, ModelSpec]
) -> tuple[dict[str, LatentRunArgs], dict[str, str]]:
    """``latent.experiments`` and the ``latent.sweep`` product, less ``latent.drop``, each merged over
    ``latent.defaults`` (which sits over the top-level ``prompt`` and ``eval``) and validated; an
    experiment listing ``seeds`` is one run per seed (:func:`latentwire.plan.stages.expand_seeds`).
    Returns the runs and each run's preset (the experiment name it comes from)."""
    lat = config.get("latent") or {}
    experiments = {}
    named = dict(lat.get("experiments") or {})
    for exp, overrides in expand_sweep(lat.get("sweep") or {}).items():
        if exp in named:
            raise ConfigError(f"latent.sweep: experiment name {exp!r} also in latent.experiments")
        named[exp] = overrides
    dropped = list(lat.get("drop") or [])
    unknown = sorted(set(dropped) - set(named))
    if unknown:
        raise ConfigError(f"latent.drop: {unknown} are not experiments (have {sorted(named)})")
    named = {exp: o for exp, o in named.items() if exp not in dropped}
    runs, presets = {}, {}
    for name, overrides in named.items():
        for exp, (preset, o) in expand_seeds(name, overrides).items():
            if exp in runs or (exp != name and exp in named):
                raise ConfigError(f"latent.experiments.{name}.seeds: run {exp!r} is also an experiment")
            runs[exp], presets[exp] = o, preset
    for exp, overrides in runs.items():
        overrides = dict(overrides or {})
        read_slots = overrides.pop(READ_SLOTS, None)
        merged = merge_configs(
            merge_configs(
                lat.get("defaults") or {},
                {"prompt": config.get("prompt") or {}, "eval": config.get("eval") or {}},
            ),
            overrides,
        )
        if read_slots is not None:  # the M axis: n_shared from the experiment's own n_private
            n_private = from_dict(LatentRunArgs, merged, where=f"latent.experiments.{exp}").latent.n_private
            if not isinstance(read_slots, int) or read_slots <= n_private:
                raise ConfigError(
                    f"latent.sweep.M: {read_slots!r} must be an integer above n_private = {n_private} ({exp})"
                )
            merged = merge_configs(merged, {"latent": {"n_shared": read_slots - n_private}})
        experiments[exp] = from_dict(LatentRunArgs, merged, where=f"latent.experiments.{exp}")
        stage_b = experiments[exp].train.stage_b_models
        if set(stage_b) - set(config["models"]):
            raise ConfigError(
                f"latent.experiments.{exp}.train.stage_b_models: {stage_b} names models outside "
                f"models {list(config['models'])}"
            )
        source = source_model_name(experiments[exp].latent.encoder)
        if source is not None and source not in registry:
            raise ConfigError(
                f"latent.experiments.{exp}.latent.encoder.source_model: {source!r} not in registry "
                f"{config['registry']}; known: {sorted(registry)}"
            )
    return experiments, presets


def head_overrides(value: str) -> dict:
    """LatentArgs overrides of a reading-head sweep value: ``shallow``, ``deep``, ``shallow+deep``,
    each optionally with ``+lora`` (receiver LoRA at the configured or default rank 8)."""
    parts = value.split("+")
    heads = {p for p in parts if p != "lora"}
    if not heads or not heads <= {"shallow", "deep"} or len(parts) != len(set(parts)):
        raise ConfigError(f"latent.sweep.head: {value!r} is not shallow, deep or shallow+deep (+lora)")
    out: dict = {"shallow": "shallow" in heads, "deep_prefix": {"enabled": "deep" in heads}}
    out["lora"] = {"rank": 8} if "lora" in parts else {"rank": 0}
    return {"latent": out}


def pretrain_runs(raw: dict, device: str, latent_defaults: dict) -> dict[str, PretrainRunArgs]:
    """``pretrain: {defaults, runs: {name: overrides}}`` → validated runs. Each run's ``latent`` starts
    from ``latent.defaults.latent`` (the experiments' own modules), its device from ``eval.device``."""
    unknown = sorted(set(raw) - {"defaults", "runs"})
    if unknown:
        raise ConfigError(f"pretrain: unknown key(s) {unknown}; allowed: defaults, runs")
    inherited = {"device": device, "latent": latent_defaults.get("latent") or {}}
    base = merge_configs(inherited, raw.get("defaults") or {})
    return {
        name: from_dict(PretrainRunArgs, merge_configs(base, overrides or {}), where=f"pretrain.runs.{name}")
        for name, overrides in (raw.get("runs") or {}).items()
    }


def check_kd(exp: str, run: LatentRunArgs, teacher: TeacherArgs, prompt: PromptArgs) -> None:
    """A KD experiment reads the shared teacher cache: it must fit the cache's K and prompt contract."""
    if not run.loss.w_kd:
        return
    where = f"latent.experiments.{exp}"
    if run.loss.k_tokens > teacher.k_tokens:
        raise ConfigError(
            f"{where}.loss.k_tokens: {run.loss.k_tokens} > teacher.k_tokens ({teacher.k_tokens}); "
            "the teacher-logit cache keeps only teacher.k_tokens answer steps"
        )
    if to_dict(run.prompt) != to_dict(prompt):
        raise ConfigError(
            f"{where}.prompt: an experiment with loss.w_kd > 0 cannot override the prompt; its teacher "
            "logits are cached once under the top-level prompt"
        )


def expand_sweep(sweep: dict) -> dict[str, dict]:
    """Cartesian product of list-valued sweep axes -> named experiment overrides.

    ``{"encoder": ["meanpool", "stq"], "M": [16, 48], "seed": [0, 1]}`` gives 8 experiments named
    like ``sweep-enc_meanpool-M_16-s_0`` (M: the slots each receiver reads); each only overrides its own fields, so adding a value
    to one axis adds jobs without touching the existing ones.
    """
    unknown = sorted(set(sweep) - set(SWEEP_AXES) - {"head"})
    if unknown:
        raise ConfigError(f"latent.sweep: unknown axis {unknown}; allowed: {sorted(SWEEP_AXES) + ['head']}")
    axes = [(k, v if isinstance(v, list) else [v]) for k, v in sweep.items()]
    if not axes:
        return {}  # itertools.product() of nothing is one empty combination, not none
    out = {}
    for combo in itertools.product(*(vals for _, vals in axes)):
        name, overrides = "sweep", {}
        for (axis, _), value in zip(axes, combo):
            if axis == "head":
                name += f"-head_{value}"
                overrides = merge_configs(overrides, head_overrides(str(value)))
                continue
            short, path = SWEEP_AXES[axis]
            name += f"-{short}_{value}"
            node = overrides
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        out[name] = overrides
    return out
