"""Path templates of the workflow's files, each written once.

Every file the plan names as a job's input or as a final output is built here, relative to the
working directory Snakemake runs in: ``resources/`` for model exports, ``results/`` for everything
the jobs write. The rules in ``workflow/rules/*.smk`` declare the same paths as their outputs; a
mismatch shows up as a missing input in ``snakemake -n``.
"""

from __future__ import annotations

TABLES = "results/tables"
FIGURES = "results/figures"


def manifest(model: str) -> str:
    """A materialized registry model's manifest (rule ``materialize_model``)."""
    return f"resources/models/{model}/manifest.json"


def split_file(dataset: str, split: str) -> str:
    """One prepared split of a dataset (rule ``prepare_data``)."""
    return f"results/data/{dataset}/{split}.parquet"


def baseline_metrics(dataset: str, model: str, baseline: str) -> str:
    return f"results/baselines/{dataset}/{model}/{baseline}/metrics.json"


def windows_file(dataset: str, exp: str, split: str) -> str:
    """The windows a trained ``select`` experiment ``exp`` keeps on ``split`` (rule ``select_windows``)."""
    return f"results/comparators/{dataset}/{exp}/windows/{split}.jsonl"


def tuned_metrics(dataset: str, model: str, kind: str, seed: int) -> str:
    return f"results/tuned/{dataset}/{model}/{kind}-s{seed}/eval/metrics.json"


def teacher_cache(dataset: str, model: str) -> str:
    """A receiver's teacher-logit cache of the train split (rule ``teacher_logits``)."""
    return f"results/teacher/{dataset}/{model}/train.safetensors"


def pretrain_checkpoint(dataset: str, name: str, seed: int) -> str:
    return f"results/pretrain/{dataset}/{name}/s{seed}/encoder.safetensors"


def latent_dir(dataset: str, exp: str) -> str:
    """A latent experiment's folder: ``train/`` (checkpoint, log) and ``eval/`` (per receiver, variant)."""
    return f"results/latent/{dataset}/{exp}"


def latent_checkpoint(dataset: str, exp: str) -> str:
    return f"{latent_dir(dataset, exp)}/train/best.safetensors"


def extension_dir(dataset: str, label: str) -> str:
    """An extended wire's folder, by its label ``{exp}+{receiver}``; laid out like :func:`latent_dir`."""
    return f"results/extend/{dataset}/{label}"


def eval_metrics(folder: str, model: str, variant: str) -> str:
    """One receiver's metrics of one variant (latent, a control or a wire format) under ``folder``."""
    return f"{folder}/eval/{model}/{variant}/metrics.json"


def joint_file(folder: str) -> str:
    return f"{folder}/eval/joint.json"


def train_log(folder: str) -> str:
    return f"{folder}/train/train_log.jsonl"
