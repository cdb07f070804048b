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
LATENT = "results/latent/{dataset}/{exp}"  # rules train_latent (train/) and eval_latent (eval/)
WINDOWS = "results/comparators/{dataset}/{exp}/windows/{split}.jsonl"  # rule select_windows
TUNED = "results/tuned/{dataset}/{model}/{tuned}-s{seed}"  # rules tune_text (train/), eval_tuned (eval/)
EXTEND = "results/extend/{dataset}/{exp}+{model}"  # rules add_receiver, eval_added_receiver

CHECKPOINT = "train/best.safetensors"  # under LATENT, TUNED, EXTEND
TRAIN_SUMMARY = "train/train_summary.json"
TRAIN_LOG = "train/train_log.jsonl"


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


def latent_dir(dataset: str, exp: str) -> str:
    """A latent experiment's folder: ``train/`` (checkpoint, log) and ``eval/`` (per receiver, variant)."""
    return LATENT.format(dataset=dataset, exp=exp)


def latent_checkpoint(dataset: str, exp: str) -> str:
    return f"{latent_dir(dataset, exp)}/{CHECKPOINT}"


def extension_dir(dataset: str, label: str) -> str:
    """An extended wire's folder, by its label ``{exp}+{receiver}``; laid out like :func:`latent_dir`."""
    return f"results/extend/{dataset}/{label}"


def eval_metrics(folder: str, model: str, variant: str) -> str:
    """One receiver's metrics of one variant (latent, a control or a wire format) under ``folder``."""
    return f"{folder}/eval/{model}/{variant}/metrics.json"


def joint_file(folder: str) -> str:
    return f"{folder}/eval/joint.json"


def train_log(folder: str) -> str:
    return f"{folder}/{TRAIN_LOG}"
