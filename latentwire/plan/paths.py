"""Path templates of the workflow's files, each written once, for the rules and the library alike.

The upper-case templates keep Snakemake's wildcard names in braces (``{dataset}``, ``{model}``,
``{exp}``, ...): the rules in ``workflow/rules/*.smk`` declare their inputs and outputs with them
(:func:`partial` fixes some wildcards and leaves the others), and the functions below fill every
wildcard for the plan's job lists. Everything is relative to the working directory Snakemake runs
in: ``resources/`` for model exports, ``results/`` for everything the jobs write.
"""

from __future__ import annotations

import re

TABLES = "results/tables"
FIGURES = "results/figures"

MANIFEST = "resources/models/{model}/manifest.json"  # rule materialize_model
SPLIT = "results/data/{dataset}/{split}.parquet"  # rule prepare_data
BASELINE = "results/baselines/{dataset}/{model}/{baseline}"  # rule baseline: predictions, metrics
TEACHER = "results/teacher/{dataset}/{model}/train.safetensors"  # rule teacher_logits (+ TEACHER_META)
TEACHER_META = "results/teacher/{dataset}/{model}/train.json"
PRETRAIN = "results/pretrain/{dataset}/{pretrain}/s{seed}"  # rule pretrain_encoder
# A latent run's folder, by the axes the design card names (encoder, M = the slots a receiver reads,
# d_z, reading head) and the experiment preset (``latent.experiments.<name>``: two presets may share
# the axes and differ in lr etc.) and its train.seed. Rules stage_a (stage_a/), stage_b (stage_b/:
# the trained checkpoint) and stage_c (stage_c/: evaluation with controls).
# The resumable state of its two training stages (outside the declared outputs: a killed job resumes),
# its logs and its benchmarks sit under the same names.
RUN = "{dataset}/{encoder}/M{M}-dz{dz}/{head}/{preset}/seed{seed}"
LATENT = f"results/latent/{RUN}"
LATENT_STATE = f"results/state/latent/{RUN}"
LATENT_LOGS = f"logs/latent/{RUN}"
LATENT_BENCH = f"benchmarks/latent/{RUN}"
STAGE_A, STAGE_B, STAGE_C = "stage_a", "stage_b", "stage_c"
HANDOFF = "stage_a/state.pt"  # Stage A's whole resumable state at its last step: where Stage B starts
WINDOWS = "results/comparators/{dataset}/{exp}/windows/{split}.jsonl"  # rule select_windows
TUNED = "results/tuned/{dataset}/{model}/{tuned}-s{seed}"  # rules tune_text (train/), eval_tuned (eval/)
EXTEND = "results/extend/{dataset}/{exp}+{model}"  # rules add_receiver, eval_added_receiver

CHECKPOINT = "train/best.safetensors"  # under TUNED, EXTEND (a latent run: under stage_a/, stage_b/)
TRAIN_SUMMARY = "train/train_summary.json"
TRAIN_LOG = "train/train_log.jsonl"
BEST = "best.safetensors"  # the files of one training folder (train/, stage_a/, stage_b/)
SUMMARY = "train_summary.json"
LOG = "train_log.jsonl"


# Outputs of the report rules (workflow/rules/report.smk): tables, then figures (PNG + SVG).
STATS_TABLES = ("intervals.csv", "intervals.md", "hypotheses.csv", "hypotheses.md")
SWEEPS = f"{TABLES}/sweeps"  # rule sweep_tables: F1 vs pooling factor, pretraining, wire bits
SWEEP_TABLES = ("pf.csv", "pretraining.csv", "bits.csv")
FIGURE_NAMES = ("f1_vs_m", "latency", "payload", "training")


def report_outputs() -> list[str]:
    """Every file the report rules write (``stats_tables``, ``sweep_tables``, ``table_figures``)."""
    out = [f"{TABLES}/{name}" for name in STATS_TABLES] + [f"{TABLES}/stats.json"]
    out += [f"{SWEEPS}/{name}" for name in SWEEP_TABLES] + [f"{SWEEPS}/sweeps.json"]
    out += [f"{FIGURES}/{f}.{ext}" for f in FIGURE_NAMES for ext in ("png", "svg")]
    return out + [f"{FIGURES}/figures.json"]


def partial(template: str, **known) -> str:
    """``template`` with the given wildcards filled and every other ``{name}`` left for Snakemake."""
    return re.sub(
        r"\{(\w+)\}", lambda m: str(known[m.group(1)]) if m.group(1) in known else m.group(0), template
    )


def inside(folder: str, *parts: str) -> str:
    """``folder/part/…``: a file under one of the folder templates above."""
    return "/".join((folder, *parts))


def manifest(model: str) -> str:
    """A materialized registry model's manifest (rule ``materialize_model``)."""
    return MANIFEST.format(model=model)


def split_file(dataset: str, split: str) -> str:
    """One prepared split of a dataset (rule ``prepare_data``)."""
    return SPLIT.format(dataset=dataset, split=split)


def baseline_metrics(dataset: str, model: str, baseline: str) -> str:
    return BASELINE.format(dataset=dataset, model=model, baseline=baseline) + "/metrics.json"


def windows_file(dataset: str, exp: str, split: str) -> str:
    """The windows a trained ``select`` experiment ``exp`` keeps on ``split`` (rule ``select_windows``)."""
    return WINDOWS.format(dataset=dataset, exp=exp, split=split)


def tuned_metrics(dataset: str, model: str, kind: str, seed: int) -> str:
    return TUNED.format(dataset=dataset, model=model, tuned=kind, seed=seed) + "/eval/metrics.json"


def teacher_cache(dataset: str, model: str) -> str:
    """A receiver's teacher-logit cache of the train split (rule ``teacher_logits``)."""
    return TEACHER.format(dataset=dataset, model=model)


def pretrain_checkpoint(dataset: str, name: str, seed: int) -> str:
    return PRETRAIN.format(dataset=dataset, pretrain=name, seed=seed) + "/encoder.safetensors"


def latent_dir(dataset: str, **cell) -> str:
    """A latent run's folder (``cell``: its encoder, M, dz, head, preset and seed wildcards; see
    :meth:`latentwire.plan.stages.LatentCell.wildcards`): ``stage_a/``, ``stage_b/``, ``stage_c/``."""
    return LATENT.format(dataset=dataset, **cell)


def latent_checkpoint(dataset: str, **cell) -> str:
    """A latent run's trained checkpoint: Stage B's best weights (what every reader of a wire loads)."""
    return inside(latent_dir(dataset, **cell), STAGE_B, BEST)


def latent_eval_dir(dataset: str, **cell) -> str:
    """A latent run's evaluation (Stage C): ``{model}/{variant}/metrics.json`` and ``joint.json``."""
    return inside(latent_dir(dataset, **cell), STAGE_C)


def extension_dir(dataset: str, label: str) -> str:
    """An extended wire's folder, by its label ``{exp}+{receiver}``: ``train/`` and ``eval/``."""
    return f"results/extend/{dataset}/{label}"


def eval_metrics(eval_dir: str, model: str, variant: str) -> str:
    """One receiver's metrics of one variant (latent, a control or a wire format) in an evaluation
    folder (a latent run's ``stage_c/``, an extension's ``eval/``)."""
    return f"{eval_dir}/{model}/{variant}/metrics.json"


def joint_file(eval_dir: str) -> str:
    return f"{eval_dir}/joint.json"


def train_log(train_dir: str) -> str:
    """The training log in a training folder (a latent run's ``stage_b/``, an extension's ``train/``)."""
    return f"{train_dir}/{LOG}"
