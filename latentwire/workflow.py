"""The workflow's plan: validate the Snakemake config strictly and derive the job matrix.

``common.smk`` builds one :class:`WorkflowPlan` at parse time. Every run config it hands to a
job is checked here with the same dataclasses the jobs use, so ``snakemake -n`` fails on a typo
before any job starts, and each job receives only its own settings (as ``params``), so changing
one ablation reruns only that ablation's jobs. The parts live in :mod:`latentwire.plan`: the section
parsers (``sections``), the rivals scheduled beside every latent (``rivals``), each latent run's stage
wildcards (``stages``) and the path templates of every file the plan names (``paths``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentwire.analysis.stats import StatsArgs
from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.data.prepare import DatasetArgs
from latentwire.encoders import source_model_name
from latentwire.evaluation.baselines import BaselineArgs, parse_baseline
from latentwire.evaluation.evaluate import EvalArgs
from latentwire.models import load_registry
from latentwire.plan import paths
from latentwire.plan.rivals import ComparatorArgs, rival_baselines, select_source, tuned_args, tuned_kinds
from latentwire.plan.sections import (
    SPLITS,
    check_kd,
    configured_baselines,
    dataset_label,
    parse_datasets,
    parse_experiments,
    pretrain_runs,
)
from latentwire.plan.stages import LatentCell, latent_cells, run_at
from latentwire.prompt import PromptArgs, prompt_for
from latentwire.training.args import LatentRunArgs
from latentwire.training.extend import Extension, parse_extensions
from latentwire.training.pretrain import PretrainRunArgs, check_pretrained
from latentwire.training.teacher import TeacherArgs, TeacherRunArgs


@dataclass
class WorkflowPlan:
    """Validated workflow config and the job matrix derived from it."""

    config: dict[str, Any]
    models: list[str]
    datasets: dict[str, DatasetArgs]
    prompt: PromptArgs
    eval: EvalArgs
    baselines: list[str] = field(default_factory=list)
    experiments: dict[str, LatentRunArgs] = field(default_factory=dict)
    splits: tuple[str, ...] = SPLITS
    stats: StatsArgs = field(default_factory=StatsArgs)
    teacher: TeacherArgs = field(default_factory=TeacherArgs)
    pretrains: dict[str, PretrainRunArgs] = field(default_factory=dict)  # encoder pretraining runs
    comparators: ComparatorArgs = field(default_factory=ComparatorArgs)
    extensions: dict[str, Extension] = field(default_factory=dict)  # latent.extensions
    configured_baselines: list[str] = field(default_factory=list)  # text, budgets, closed (no rivals)
    cells: dict[str, LatentCell] = field(default_factory=dict)  # each run's stage wildcards (plan.stages)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WorkflowPlan:
        """Parse and cross-check every section (:mod:`latentwire.plan.sections`); fails on the first error."""
        registry = load_registry(config["registry"])
        missing = [m for m in config["models"] if m not in registry]
        if missing:
            raise ConfigError(
                f"models: {missing} not in registry {config['registry']}; known: {sorted(registry)}"
            )
        datasets = parse_datasets(config)
        prompt = from_dict(PromptArgs, config.get("prompt") or {}, where="prompt")
        ev = from_dict(EvalArgs, config.get("eval") or {}, where="eval")
        if ev.split not in SPLITS:
            raise ConfigError(f"eval.split: {ev.split!r} is not one of {list(SPLITS)}")
        names = configured_baselines(config)
        configured = list(names)
        lat = config.get("latent") or {}
        experiments, presets = parse_experiments(config, registry)
        cells = latent_cells(experiments, presets)
        comparators = from_dict(ComparatorArgs, config.get("comparators") or {}, where="comparators")
        names += [b for b in rival_baselines(comparators, experiments) if b not in names]
        tuned_kinds(comparators, experiments)  # validates comparators.tuned against the experiments
        stats = from_dict(StatsArgs, config.get("stats") or {}, where="stats")
        teacher = from_dict(TeacherArgs, config.get("teacher") or {}, where="teacher")
        for exp, run in experiments.items():
            check_kd(exp, run, teacher, prompt)
        extensions = parse_extensions(lat.get("extensions") or {}, experiments, config["models"], registry)
        # each model's registry prompt override (added receivers' too), merged and validated now
        for m in dict.fromkeys([*config["models"], *(x.args.receiver for x in extensions.values())]):
            for p in [prompt, *(run.prompt for run in experiments.values())]:
                prompt_for(registry[m], p)
        pretrains = pretrain_runs(config.get("pretrain") or {}, ev.device, lat.get("defaults") or {})
        for exp, run in experiments.items():
            check_pretrained(exp, run.latent, pretrains)
        if len({tuple(run.latent.wire.formats) for run in experiments.values()}) > 1:
            raise ConfigError("latent.*.latent.wire.formats: must be the same for every experiment")
        return cls(
            config,
            list(config["models"]),
            datasets,
            prompt,
            ev,
            names,
            experiments,
            stats=stats,
            teacher=teacher,
            pretrains=pretrains,
            comparators=comparators,
            extensions=extensions,
            configured_baselines=configured,
            cells=cells,
        )

    @property
    def eval_split(self) -> str:
        return self.eval.split

    # --- the latent runs' stage jobs (latentwire.plan.stages, workflow/rules/latent.smk) -------
    def run_at(self, wildcards: dict) -> str:
        """The run (experiment name) of a stage job's wildcards, checked against its settings."""
        return run_at(self.cells, wildcards)

    def cell_values(self, key: str) -> list[str]:
        """The values one stage wildcard takes (for ``wildcard_constraints``)."""
        return sorted({str(getattr(c, key)) for c in self.cells.values()})

    def run_dir(self, dataset: str, exp: str) -> str:
        return paths.latent_dir(dataset, **self.cells[exp].wildcards())

    def checkpoint(self, dataset: str, exp: str) -> str:
        """The trained checkpoint of run ``exp`` (Stage B's best weights)."""
        return paths.latent_checkpoint(dataset, **self.cells[exp].wildcards())

    def eval_dir(self, dataset: str, exp: str) -> str:
        """Run ``exp``'s Stage C folder (evaluation with controls, joint rescoring)."""
        return paths.latent_eval_dir(dataset, **self.cells[exp].wildcards())

    # --- per-job settings (JSON strings passed as params) ---------------------------------
    def dataset_json(self, dataset: str) -> str:
        return json.dumps({k: v for k, v in to_dict(self.datasets[dataset]).items()}, sort_keys=True)

    def baseline_json(self, baseline: str) -> str:
        args = BaselineArgs(name=baseline, prompt=self.prompt, eval=self.eval)
        return json.dumps(to_dict(args), sort_keys=True)

    def latent_json(self, exp: str) -> str:
        return json.dumps(to_dict(self.experiments[exp]), sort_keys=True)

    def teacher_json(self) -> str:
        """The teacher-logit job's settings: cache sizes, the top-level prompt contract, the device."""
        return json.dumps(
            to_dict(TeacherRunArgs(self.teacher, self.prompt, self.eval.device)), sort_keys=True
        )

    def stats_json(self) -> str:
        return json.dumps(to_dict(self.stats), sort_keys=True)

    # --- inputs ----------------------------------------------------------------------------
    def dataset_inputs(self, dataset: str) -> list[str]:
        return [s.path for s in self.datasets[dataset].sources if s.path]

    def model_source_inputs(self, model: str) -> list[str]:
        spec = load_registry(self.config["registry"])[model]
        if spec.source.kind == "local":
            return [str(Path(spec.source.path) / "config.json")]
        return []

    # --- outputs ---------------------------------------------------------------------------
    def receiver_baselines(self, model: str) -> list[str]:
        """The baselines of one receiver: every one for ``models``; for a receiver added to a trained
        wire (``latent.extensions``), the configured ones and the rivals at the M it reads there (the
        M of the experiments it extends), so its latent rows meet text, budget-M and the comparators."""
        if model in self.models:
            return list(self.baselines)
        ms = {
            self.experiments[x.exp].latent.read_slots()
            for x in self.extensions.values()
            if x.args.receiver == model
        }
        return [b for b in self.baselines if b in self.configured_baselines or parse_baseline(b)[1] in ms]

    def baseline_cells(self) -> list[tuple[str, str, str]]:
        models = self.models + self.extension_receivers()  # an added receiver gets its baselines too
        return [(d, m, b) for d in self.datasets for m in models for b in self.receiver_baselines(m)]

    def baseline_metrics(self) -> list[str]:
        return [paths.baseline_metrics(d, m, b) for d, m, b in self.baseline_cells()]

    def baseline_datasets(self) -> list[str]:
        return [d for d, _, _ in self.baseline_cells()]

    # --- discrete comparators and tuned text ceilings (latentwire.plan.rivals) --------------
    @property
    def select_source(self) -> str | None:
        """The select experiment whose checkpoint ``select-text-M`` reads, or None."""
        return select_source(self.comparators, self.experiments)

    def windows_file(self, dataset: str, split: str) -> str:
        return paths.windows_file(dataset, self.select_source, split)

    def windows_json(self, split: str) -> str:
        """EvalArgs selecting the rows of ``split`` the windows are needed for ("" = every row)."""
        return json.dumps(to_dict(self.eval), sort_keys=True) if split == self.eval.split else ""

    def baseline_windows(self, dataset: str, baseline: str) -> list[str]:
        """[the select windows of the evaluation split] for ``select-text-M``, else []."""
        if not baseline.startswith("select-text-"):
            return []
        return [self.windows_file(dataset, self.eval.split)]

    def select_windows_inputs(self, dataset: str) -> dict[str, str]:
        exp = self.select_source
        source = source_model_name(self.experiments[exp].latent.encoder)
        return {
            "checkpoint": self.checkpoint(dataset, exp),
            "manifest": paths.manifest(source),
        }

    def tuned_cells(self) -> list[tuple[str, str, str, int]]:
        """(dataset, model, tuned kind, seed) of every tuned text ceiling: each receiver's, an added
        receiver's too (``select-text-M`` only where that rival is one of its baselines)."""
        kinds = tuned_kinds(self.comparators, self.experiments)
        seeds = self.comparators.tuned.seeds
        own = {
            m: [k for k in kinds if k == "text" or k in self.receiver_baselines(m)]
            for m in self.models + self.extension_receivers()
        }
        return [(d, m, k, s) for d in self.datasets for m, ks in own.items() for k in ks for s in seeds]

    def tuned_json(self, kind: str, seed: int | str) -> str:
        args = tuned_args(self.comparators, self.experiments, kind, int(seed), self.prompt, self.eval)
        return json.dumps(to_dict(args), sort_keys=True)

    def tuned_windows(self, dataset: str, kind: str, splits: tuple[str, ...]) -> list[str]:
        if not kind.startswith("select-text-"):
            return []
        return [self.windows_file(dataset, s) for s in splits]

    def tuned_metrics(self) -> list[str]:
        return [paths.tuned_metrics(d, m, k, s) for d, m, k, s in self.tuned_cells()]

    def teacher_inputs(self, dataset: str, exp: str) -> list[str]:
        """Teacher-logit caches (one per receiver, in ``models`` order) when ``exp`` uses KD, else []."""
        if not self.experiments[exp].loss.w_kd:
            return []
        return [paths.teacher_cache(dataset, m) for m in self.models]

    def manifests(self) -> list[str]:
        return [paths.manifest(m) for m in self.models]

    def encoder_sources(self) -> list[str]:
        """Registry models that some experiment's (or pretraining's) encoder reads but that are not receivers."""
        runs = [*self.experiments.values(), *self.pretrains.values()]
        names = {source_model_name(run.latent.encoder) for run in runs}
        return sorted(names - {None} - set(self.models))

    def encoder_manifest(self, exp: str) -> list[str]:
        """[manifest of ``exp``'s encoder source model] when it is not a receiver, else []."""
        return self._source_manifest(self.experiments[exp].latent.encoder)

    def _source_manifest(self, encoder) -> list[str]:
        source = source_model_name(encoder)
        if source is None or source in self.models:
            return []
        return [paths.manifest(source)]

    # --- encoder pretraining (workflow/rules/pretrain.smk) ---------------------------------
    def pretrain_json(self, name: str, seed: int | str) -> str:
        """Settings of pretraining run ``name`` at ``seed`` (the fine-tuning experiment's train.seed)."""
        cfg = to_dict(self.pretrains[name])
        cfg["pretrain"]["seed"] = int(seed)
        return json.dumps(cfg, sort_keys=True)

    def pretrain_encoder_manifest(self, name: str) -> list[str]:
        return self._source_manifest(self.pretrains[name].latent.encoder)

    def pretrain_checkpoint(self, dataset: str, exp: str) -> list[str]:
        """[checkpoint ``exp`` starts from] when its encoder names a pretraining run, else []."""
        run = self.experiments[exp]
        name = run.latent.encoder.pretrained
        if name is None:
            return []
        return [paths.pretrain_checkpoint(dataset, name, run.train.seed)]

    def pretrain_cells(self) -> list[tuple[str, str, int]]:
        """(dataset, pretrain run, seed) of every pretraining that some experiment starts from."""
        runs = self.experiments.values()
        named = [
            (run.latent.encoder.pretrained, run.train.seed) for run in runs if run.latent.encoder.pretrained
        ]
        return sorted({(d, name, seed) for d in self.datasets for name, seed in named})

    def wire_fit_data(self, dataset: str, exp: str) -> list[str]:
        """[train split] when ``exp`` evaluates a learned wire quantizer (fitted on it), else []."""
        return (
            [paths.split_file(dataset, "train")] if "pq" in self.experiments[exp].latent.wire.formats else []
        )

    @property
    def latent_variants(self) -> tuple[str, ...]:
        """Evaluated variants of every experiment: latent, controls, then the wire formats (int8 default)."""
        formats = next((run.latent.wire.formats for run in self.experiments.values()), ["int8"])
        return ("latent", "shuffled", "zero", *formats)

    def latent_eval_outputs(self, dataset: str, exp: str) -> list[str]:
        folder = self.eval_dir(dataset, exp)
        return [paths.eval_metrics(folder, m, s) for m in self.models for s in self.latent_variants]

    def table_metrics(self) -> list[str]:
        files = self.baseline_metrics()
        for d in self.datasets:
            for e in self.experiments:
                files += self.latent_eval_outputs(d, e)
            for x in self.extensions:
                files += self.extension_eval_outputs(d, x)
        return files + self.tuned_metrics()

    def label(self, dataset: str) -> str:
        """The dataset name the tables use (a k-fold dataset's folds pool under its base name)."""
        return dataset_label(dataset, self.datasets[dataset])

    def table_datasets(self) -> list[str]:
        """The ``--datasets`` label of each :meth:`table_metrics` file."""
        names = self.baseline_datasets()
        for d in self.datasets:
            for e in self.experiments:
                names += [d] * len(self.latent_eval_outputs(d, e))
            for x in self.extensions:
                names += [d] * len(self.extension_eval_outputs(d, x))
        return [self.label(d) for d in names + [d for d, _, _, _ in self.tuned_cells()]]

    def joint_files(self) -> list[str]:
        """Joint rescoring of each trained wire, per dataset (runs', then extensions': joint_datasets)."""
        out = []
        for d in self.datasets:
            out += [self.eval_dir(d, e) for e in self.experiments]
            out += [paths.inside(self.extension_dir(d, x), "eval") for x in self.extensions]
        return [paths.joint_file(folder) for folder in out]

    def joint_datasets(self) -> list[str]:
        return [self.label(d) for d in self.datasets for _ in [*self.experiments, *self.extensions]]

    def train_logs(self) -> list[str]:
        """Every trained wire's whole training log (a run's Stage B log holds its Stage A steps too)."""
        out = [
            paths.inside(self.run_dir(d, e), paths.STAGE_B) for d in self.datasets for e in self.experiments
        ]
        out += [
            paths.inside(self.extension_dir(d, x), "train") for d in self.datasets for x in self.extensions
        ]
        return [paths.train_log(folder) for folder in out]

    def train_labels(self) -> list[str]:
        labels = [f"{d}/{e}" for d in self.datasets for e in self.experiments]
        return labels + [f"{d}/{x.label}" for d in self.datasets for x in self.extensions.values()]

    # --- receivers added to a trained wire (latentwire/training/extend.py, workflow/rules/extend.smk) -----
    def extension_receivers(self) -> list[str]:
        return sorted({x.args.receiver for x in self.extensions.values()} - set(self.models))

    def extension_dir(self, dataset: str, ext: str) -> str:
        """``results/extend/{dataset}/{exp}+{receiver}``: the extended wire's folder, by its label."""
        return paths.extension_dir(dataset, self.extensions[ext].label)

    def extension_named(self, exp: str, model: str) -> str:
        """The ``latent.extensions`` name of the extension adding ``model`` to ``exp`` (unique)."""
        return next(n for n, x in self.extensions.items() if (x.exp, x.args.receiver) == (exp, model))

    def extend_json(self, ext: str) -> str:
        return json.dumps(to_dict(self.extensions[ext].args), sort_keys=True)

    def extension_inputs(self, dataset: str, exp: str) -> dict[str, Any]:
        """The experiment's checkpoint and the manifest of its encoder's source model."""
        return {
            "checkpoint": self.checkpoint(dataset, exp),
            "encoder_manifest": self.encoder_manifest(exp),
        }

    def extension_reference(self, dataset: str, exp: str) -> list[str]:
        """The experiment's own evaluation of its receivers (their predictions sit beside these)."""
        return [paths.eval_metrics(self.eval_dir(dataset, exp), m, "latent") for m in self.models]

    def extension_eval_outputs(self, dataset: str, ext: str) -> list[str]:
        """The newcomer's latent, controls and int8 wire: the rows the tables add."""
        m, folder = self.extensions[ext].args.receiver, self.extension_dir(dataset, ext)
        return [paths.eval_metrics(paths.inside(folder, "eval"), m, s) for s in self.latent_variants]

    def final_outputs(self) -> list[str]:
        out = [f"{paths.TABLES}/results.csv", f"{paths.TABLES}/results.md"]
        out += self.joint_files()
        return out + paths.report_outputs()
