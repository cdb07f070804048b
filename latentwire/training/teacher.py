"""The text teacher for knowledge distillation, computed once and cached as top-k logits.

The teacher is the same frozen receiver reading the full TEXT prompt of the prompt contract
(:func:`latentwire.prompt.build_prompt` in mode ``text``); its teacher-forced logits come from
:func:`latentwire.scoring.answer_logits` on a :func:`latentwire.batching.collate` batch, exactly as
the on-the-fly teacher in training. Because the receiver is frozen, those logits never change during
training, so ``latentwire teacher-logits`` computes them ONCE per (model, split) and keeps, for the
first K answer steps of every example, the top-k values (float16) and their vocabulary ids (int32).

Cache file (safetensors), rows in example order, N examples, K steps, k kept logits::

    values      (N, K, k) float16   top-k teacher logits, descending (temperature 1, raw logits)
    indices     (N, K, k) int32     their vocabulary ids
    answer_ids  (N, K)    int32     the gold answer ids the teacher was forced with; -100 past the end

plus string metadata ``ids`` (JSON list of example ids: the key of each row) and ``meta`` (JSON:
model, split, n_examples, top_k, k_tokens, prompt-contract hash). Training checks the model name,
the prompt hash and K against its own run, and the cached gold ids against its own, so a cache built
under another prompt contract or tokenizer fails loudly instead of teaching the wrong tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from latentwire.batching import collate, embed_ids
from latentwire.config import FieldError, to_dict
from latentwire.evaluation.evaluate import model_view
from latentwire.heads.lora import lora_disabled
from latentwire.io import atomic_path, write_json
from latentwire.models import LoadedModel
from latentwire.models.loading import device_problem
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id, prompt_for
from latentwire.provenance import config_hash
from latentwire.scoring import answer_logits
from latentwire.training.hidden import HiddenRecorder
from latentwire.training.losses import TopKTeacher

log = logging.getLogger(__name__)


@dataclass
class TeacherArgs:
    """What the teacher-logit cache keeps (workflow config section ``teacher``)."""

    top_k: int = 32  # logits kept per answer step (clipped to the vocabulary size)
    k_tokens: int = 4  # answer steps cached per example (K); KD runs need loss.k_tokens <= K
    batch_size: int = 8  # examples per teacher forward (padding only; no effect on the values kept)

    def validate(self) -> None:
        if self.top_k < 1 or self.k_tokens < 1 or self.batch_size < 1:
            raise ValueError("top_k, k_tokens and batch_size must be >= 1")


@dataclass
class TeacherRunArgs:
    """One ``latentwire teacher-logits`` job: cache settings, the prompt contract, the device."""

    teacher: TeacherArgs = field(default_factory=TeacherArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)
    device: str = "auto"

    def validate(self) -> None:
        if device_problem(self.device):
            raise FieldError("device", device_problem(self.device))


def prompt_hash(prompt: PromptArgs) -> str:
    """A short hash of the prompt contract; a cache is valid only under the same contract."""
    return config_hash(to_dict(prompt))


def gold_ids(lm: LoadedModel, prompt: PromptArgs, examples: list[dict]) -> list[list[int]]:
    """Gold answer ids (first reference answer, ending in the end-of-answer id), as training uses."""
    prompt = prompt_for(lm.spec, prompt)
    eos = eos_id(lm.tokenizer, lm.spec.eos_token)
    return [answer_ids(e["answers"][0], lm.tokenizer, prompt, lm.uses_chat_template, eos) for e in examples]


@torch.no_grad()
def text_teacher_logits(
    lm: LoadedModel, prompt: PromptArgs, views: list[dict], golds: list[list[int]]
) -> torch.Tensor:
    """Teacher-forced logits of ``lm`` reading the text prompts of ``views``. (B, A, V) float32.

    ``views`` are :func:`latentwire.evaluation.evaluate.model_view` dicts; ``golds`` the answer ids to force
    (A = the longest). Column j predicts answer token j, as in :func:`answer_logits`.
    """
    tok, chat = lm.tokenizer, lm.uses_chat_template
    prompt = prompt_for(lm.spec, prompt)
    text = [build_prompt(v, tok, prompt, chat, "text").ids for v in views]
    with lora_disabled(lm.model):  # the teacher is the base model, even while LoRA trains
        embeds = [embed_ids(lm.model, t, lm.device) for t in text]  # each (T_i, d)
        return answer_logits(lm.model, collate(lm.model, embeds, golds))


def teacher_targets(
    lm: LoadedModel,
    prompt: PromptArgs,
    examples: list[dict],
    golds: list[list[int]],
    cache: TeacherCache | None,
    kd: bool,
    hidden_layers: list[int],
) -> tuple[torch.Tensor | TopKTeacher | None, dict[int, torch.Tensor]]:
    """This step's teacher targets for ``examples``: (KD teacher or None, {layer: hidden (B, T, d)}).

    KD reads the cached top-k when there is a cache, else the full logits (B, A, V) of a fresh text
    forward. Hidden states (``hidden_layers``; none = {}) always come from a fresh text forward
    under no_grad, the same one the uncached KD uses, so at most one teacher forward runs per step.
    """
    teacher = None
    if kd and cache is not None:
        teacher = cache.lookup([str(e["id"]) for e in examples], golds, lm.device)  # TopKTeacher
    hidden: dict[int, torch.Tensor] = {}
    if (kd and teacher is None) or hidden_layers:
        recorder = HiddenRecorder(lm.model, hidden_layers)
        try:
            logits = text_teacher_logits(lm, prompt, [model_view(e) for e in examples], golds)
        finally:
            hidden = recorder.stop()
        teacher = logits if kd and teacher is None else teacher
    return teacher, hidden


def compute_teacher_topk(
    lm: LoadedModel, examples: list[dict], prompt: PromptArgs, args: TeacherArgs
) -> dict[str, torch.Tensor]:
    """Top-k teacher logits of the first K answer steps of every example (see module docstring).

    Returns ``values`` (N, K, k) float16, ``indices`` (N, K, k) int32, ``answer_ids`` (N, K) int32,
    rows in the order of ``examples``; steps past an answer's end hold zeros and gold id -100.
    """
    if not examples:
        raise ValueError("no examples to compute teacher logits for")
    K, N = args.k_tokens, len(examples)
    views = [model_view(e) for e in examples]
    golds = gold_ids(lm, prompt, examples)
    gold = _first_k(golds, K)  # (N, K)
    values, indices = [], []
    for s in range(0, N, args.batch_size):
        sl = slice(s, s + args.batch_size)
        logits = text_teacher_logits(lm, prompt, views[sl], golds[sl])[:, :K]  # (b, min(A, K), V)
        top = logits.topk(min(args.top_k, logits.shape[-1]), dim=-1)  # sorted, descending
        pad = (0, 0, 0, K - logits.shape[1])  # a batch whose answers are all shorter than K
        real = (gold[sl] != -100).unsqueeze(-1)  # (b, K, 1): zeros past each answer's end
        values.append(F.pad(top.values.to(torch.float16).cpu(), pad) * real)  # (b, K, k)
        indices.append(F.pad(top.indices.to(torch.int32).cpu(), pad) * real)  # (b, K, k)
        log.info("teacher %s: %d/%d examples", lm.spec.name, min(s + args.batch_size, N), N)
    return {"values": torch.cat(values), "indices": torch.cat(indices), "answer_ids": gold}


def _first_k(golds: list[list[int]], K: int) -> torch.Tensor:
    """The first K gold ids of each answer, -100 past its end. (B, K) int32."""
    out = torch.full((len(golds), K), -100, dtype=torch.int32)
    for i, g in enumerate(golds):
        out[i, : min(len(g), K)] = torch.tensor(g[:K], dtype=torch.int32)
    return out


def teacher_meta(model: str, split: str, tensors: dict[str, torch.Tensor], prompt: PromptArgs) -> dict:
    """The metadata a cache carries and training checks (see :meth:`TeacherCache.check`)."""
    N, K, k = tensors["values"].shape
    return {
        "model": model,
        "split": split,
        "n_examples": N,
        "top_k": k,
        "k_tokens": K,
        "prompt_hash": prompt_hash(prompt),
    }


def save_teacher_cache(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    ids: list[str],
    meta: dict,
    meta_path: str | Path | None = None,
    prov: dict | None = None,
) -> None:
    """Write the cache atomically; ``meta_path`` gets ``meta`` + ``provenance`` as JSON (for people)."""
    if len(set(ids)) != len(ids) or len(ids) != tensors["values"].shape[0]:
        raise ValueError("teacher cache needs one unique example id per row")
    header = {"ids": json.dumps(ids), "meta": json.dumps(meta, default=str)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    if meta_path is not None:
        write_json(meta_path, {**meta, "provenance": prov})


class TeacherCache:
    """A loaded teacher-logit cache: rows looked up by example id (held on the CPU)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with safe_open(self.path, framework="pt") as f:
            header = f.metadata() or {}
            self.values = f.get_tensor("values")  # (N, K, k) float16
            self.indices = f.get_tensor("indices")  # (N, K, k) int32
            self.answer_ids = f.get_tensor("answer_ids")  # (N, K) int32
        if "ids" not in header or "meta" not in header:
            raise ValueError(f"{self.path}: not a teacher-logit cache (no ids/meta metadata)")
        self.meta = json.loads(header["meta"])
        self.rows = {i: r for r, i in enumerate(json.loads(header["ids"]))}

    def check(self, model: str, prompt: PromptArgs, k_tokens: int) -> None:
        """Fail unless the cache was built for ``model`` under ``prompt`` with K >= ``k_tokens``."""
        m = self.meta
        if m.get("model") != model:
            raise ValueError(f"{self.path}: teacher cache of model {m.get('model')!r}, not {model!r}")
        if m.get("prompt_hash") != prompt_hash(prompt):
            raise ValueError(f"{self.path}: built under another prompt contract; rebuild it")
        if m.get("k_tokens", 0) < k_tokens:
            raise ValueError(f"{self.path}: caches {m.get('k_tokens')} answer steps, KD needs {k_tokens}")

    def lookup(self, ids: list[str], golds: list[list[int]], device: torch.device) -> TopKTeacher:
        """The cached top-k of examples ``ids`` (B, K, k), checked against their gold ids ``golds``."""
        missing = [i for i in ids if i not in self.rows]
        if missing:
            raise KeyError(f"{self.path}: example ids {missing[:5]} not in the teacher cache")
        rows = torch.tensor([self.rows[i] for i in ids])
        if not torch.equal(self.answer_ids[rows], _first_k(golds, self.answer_ids.shape[1])):
            raise ValueError(f"{self.path}: cached gold answer ids differ from training's (tokenizer?)")
        return TopKTeacher(
            self.values[rows].to(device),  # (B, K, k) float16; the loss upcasts
            self.indices[rows].to(device, torch.long),  # (B, K, k)
        )


def load_teacher_caches(
    lms: list[LoadedModel],
    paths: list[str | None] | None,
    prompt: PromptArgs,
    k_tokens: int,
    ids: list[str] | None = None,
) -> dict[str, TeacherCache]:
    """The caches of the receivers that have one (``paths`` in the order of ``lms``), checked
    (model, prompt contract, K, and that they hold every example id in ``ids``).

    A receiver without a cache gets the on-the-fly text teacher (one extra forward per step); that
    is logged here, once per run.
    """
    paths = list(paths) if paths else [None] * len(lms)
    if len(paths) != len(lms):
        raise ValueError(f"{len(paths)} teacher-logit caches for {len(lms)} receivers")
    caches = {}
    for lm, path in zip(lms, paths):
        if path is None:
            log.warning(
                "KD for %s: no teacher-logit cache; running the text teacher every step", lm.spec.name
            )
            continue
        caches[lm.spec.name] = cache = TeacherCache(path)
        cache.check(lm.spec.name, prompt_for(lm.spec, prompt), k_tokens)
        missing = [i for i in ids or [] if i not in cache.rows]
        if missing:
            raise ValueError(f"{path}: {len(missing)} training examples not cached, e.g. {missing[:3]}")
    return caches
