"""Latent training: encoder + adapters learn to make frozen receivers answer from Z.

:func:`train` sets everything up (the interlingua from :mod:`latentwire.latent.build`, the optimizer
and its schedule, the teacher caches, the resumable state), then only iterates: each step is
:func:`~latentwire.training.step.train_step` (Stage A0: :func:`~latentwire.training.step.encoder_step`);
validation is :func:`validate`. Resumable state (trainable weights, optimizer, RNG, log) is one atomic
checkpoint outside the outputs (:mod:`latentwire.training.checkpoint`); a killed run resumes from it,
and the outputs are written from it at the end. The best checkpoint is picked on the VALIDATION
split; a run whose predictions collapse stops.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from latentwire.config import ConfigError, to_dict
from latentwire.encoders import source_model_name
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view, select_examples
from latentwire.heads.regress_init import fit_projectors
from latentwire.io import write_json
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import Interlingua
from latentwire.latent.prompts import latent_prompt_maker
from latentwire.models import LoadedModel
from latentwire.prompt import content_text, prompt_for
from latentwire.training.args import LatentRunArgs
from latentwire.training.checkpoint import (
    FILENAME,
    file_identity,
    frame_digest,
    pack,
    resume,
    save_checkpoint,
    state_key,
    trainable_weights,
    write_outputs,
)
from latentwire.training.nonfinite import SkipBudget
from latentwire.training.optim import continues_schedule, lr_schedule, make_optimizer
from latentwire.training.pretrain import load_pretrained
from latentwire.training.step import encoder_step, train_step
from latentwire.training.teacher import load_teacher_caches

log = logging.getLogger(__name__)


def validate(lms: list[LoadedModel], il: Interlingua, run: LatentRunArgs, examples: list[dict]) -> dict:
    """Greedy F1 and diversity of each receiver on validation examples."""
    il.eval()
    out = {}
    ev = EvalArgs(**{**to_dict(run.eval), "n_examples": 0})
    for lm in lms:
        _, s = evaluate(lm, examples, latent_prompt_maker(lm, il, run.prompt), run.prompt, ev, desc="val")
        out[lm.spec.name] = {
            k: s[k] for k in ("f1", "em", "nll_per_token", "unique_prediction_ratio", "first_token_top1")
        }
    il.train()
    out["mean_f1"] = float(np.mean([out[lm.spec.name]["f1"] for lm in lms]))
    return out


def train(
    lms: list[LoadedModel],
    run: LatentRunArgs,
    train_df,
    val_df,
    out_dir: str | Path,
    device: torch.device,
    teacher_paths: list[str | None] | None = None,
    sources: list[LoadedModel] | None = None,
    state_dir: str | Path | None = None,
    il: Interlingua | None = None,
    identity_extra: dict | None = None,
    init_from: str | Path | None = None,
    stop_at: int | None = None,
    handoff: str | Path | None = None,
    init_state: str | Path | None = None,
) -> dict:
    """Train, validate, checkpoint; write the outputs; return the summary.

    ``out_dir`` receives only the outputs, each written whole at the end: ``best.safetensors``,
    ``train_log.jsonl`` (steps 1..N) and ``train_summary.json``. The resumable state lives in
    ``state_dir/<key>/`` (default ``out_dir/.state``; see :mod:`latentwire.training.checkpoint`), so a rerun
    after a kill (which may have deleted the outputs) resumes from the last checkpoint, and a rerun
    with other settings, models or data starts afresh.

    ``sources``: an encoder's frozen source model when it is not one of the receivers.
    ``init_from``: a pretraining checkpoint (``latentwire pretrain-encoder``) the encoder and
    projectors start from; a resumed run's own checkpoint then replaces it.

    ``il``: a prebuilt interlingua to train instead of a fresh one (:mod:`latentwire.training.extend`: a
    trained wire with one new receiver, ``lms``, whose head alone trains and validates);
    ``identity_extra``: what else the run depends on (e.g. that wire's checkpoint hash), hashed into
    the state key with the rest.

    ``teacher_paths``: one teacher-logit cache per receiver (order of ``lms``) for KD; None (or a
    None entry) runs that receiver's text teacher on the fly. Ignored when ``loss.w_kd`` is 0.

    One trajectory in two jobs (the workflow's ``stage_a`` and ``stage_b``): ``stop_at`` ends this job
    after that many steps (Stage A: ``train.stage_a_end()``; the schedule stays the one of
    ``train.steps``) and ``handoff`` receives the whole resumable state there (written even after 0
    steps: then the initial weights); ``init_state`` (a Stage A handoff of the same run) is where this
    job starts when its own ``state_dir`` has no state yet. Split this way, the steps, the optimizer,
    the schedule and the random states are those of one uninterrupted run.
    """
    out_dir = Path(out_dir)
    t = run.train
    names = [lm.spec.name for lm in lms]
    unknown = sorted(set(t.stage_b_models) - set(names))
    if unknown:
        raise ConfigError(f"train.stage_b_models: {unknown} are not receivers of this run ({names})")
    identity = {**run_identity(run, lms, sources, train_df, val_df, teacher_paths), **(identity_extra or {})}
    if init_from:  # another pretraining checkpoint is another trajectory
        identity["init_from"] = file_identity(init_from)
    key = state_key(identity)
    state_path = Path(state_dir or out_dir / ".state") / key / FILENAME
    write_json(state_path.parent / "identity.json", identity)  # what the key hashes, for a reader
    torch.manual_seed(t.seed)
    fresh = il is None
    il = il if il is not None else build_interlingua(run.latent, lms, device, sources)
    if init_from:
        load_pretrained(il, init_from)
    elif fresh and run.latent.adapter.init == "regress":  # a resumed run's state replaces this start
        regress_start(il, run, lms, sources, train_df)
    params = il.trainable_parameters()
    opt = make_optimizer(il, t.lr, t.weight_decay, t.head_lr_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(t))
    train_rows = select_examples(train_df, EvalArgs(n_examples=0))
    teachers = {}
    if run.loss.w_kd:  # every training example must be in each cache: checked now, not at step N
        ids = [str(r["id"]) for r in train_rows]
        teachers = load_teacher_caches(lms, teacher_paths, run.prompt, run.loss.k_tokens, ids)
    val_rows = select_examples(val_df, EvalArgs(n_examples=t.val_examples, seed=t.seed))
    unit = resume(state_path, key, il, opt, sched, continues_schedule(t))
    if init_state and unit["step"] == 0:  # no state of its own (or none this schedule continues)
        unit = resume(Path(init_state), key, il, opt, sched, continues_schedule(t))
    stop = t.steps if stop_at is None else min(stop_at, t.steps)
    static_z = il.encoder.input_independent  # a soft-prompt control: never "collapsed"
    b_lms = [lm for lm in lms if not t.stage_b_models or lm.spec.name in t.stage_b_models]
    step, best, stopped = unit["step"], unit["best"], unit["stopped"]
    records, best_weights = unit["records"], unit["best_weights"]
    t0, seconds = time.time(), unit["train_seconds"]
    skips = SkipBudget.from_records(t.steps, "train", records)
    if t.eval_at_start and step == 0 and "start_val" not in best:  # the start, before any update
        start = validate(lms, il, run, val_rows)
        log.info("step 0 validation %s", start)
        best = {**best, "start_val": start}
        if start["mean_f1"] > best["mean_f1"]:
            best.update(mean_f1=start["mean_f1"], step=0)
            best_weights = trainable_weights(il)
    il.train()
    while step < stop and stopped == "completed":
        rng = np.random.default_rng(t.seed * 1_000_003 + step)  # per-step RNG: resumable without state
        n = t.batch_size * t.accum_steps  # accum_steps micro-batches of batch_size
        batch = [train_rows[i] for i in rng.choice(len(train_rows), n, replace=False)]
        record = {"step": step + 1, "lr": sched.get_last_lr()[0]}
        norms = t.grad_norm_every > 0 and (step + 1) % t.grad_norm_every == 0
        stage_a = step < t.stage_a_steps
        if step < t.encoder_warmup_steps:  # Stage A0: the encoder's own loss, no receiver runs
            record["stage"] = "A0"
            record.update(encoder_step(il, run, batch, params, opt, sched))
        else:
            record["stage"] = "A" if stage_a else "B"
            step_kw = {"teachers": teachers, "log_grad_norms": norms, "stage_a": stage_a}
            step_kw["train_encoder"] = t.stage_b_encoder and step >= t.encoder_frozen_steps
            # drawn after the batch, so a run without sample_receiver sees the batches it always saw
            step_lms = [b_lms[int(rng.integers(len(b_lms)))]] if t.sample_receiver else b_lms
            record.update(train_step(step_lms, il, run, batch, params, opt, sched, **step_kw))
        step += 1
        skips.check(step, record, [e.get("id") for e in batch])
        if step % t.log_every == 0 or step == 1:
            log.info("step %d %s", step, {k: v for k, v in record.items() if k != "step"})
        if step % t.eval_every == 0 or step == t.steps:
            record["val"] = validate(lms, il, run, val_rows)
            log.info("step %d validation %s", step, record["val"])
            if record["val"]["mean_f1"] > best["mean_f1"]:
                best = {**best, "mean_f1": record["val"]["mean_f1"], "step": step}
                best_weights = trainable_weights(il)
            ratios = [record["val"][lm.spec.name]["unique_prediction_ratio"] for lm in lms]
            if step >= t.collapse_after and max(ratios) < t.collapse_ratio and not static_z:
                stopped = "collapsed"
                log.error(
                    "collapse: unique-prediction share below %.2f at step %d; stopping",
                    t.collapse_ratio,
                    step,
                )
        records.append(json.loads(json.dumps(record)))  # plain JSON types, as the log file holds them
        if step % t.eval_every == 0 or stopped != "completed" or step == t.steps:
            unit = {"step": step, "best": best, "stopped": stopped, "records": records}
            unit.update(best_weights=best_weights, train_seconds=seconds + time.time() - t0)
            save_checkpoint(state_path, pack(key, il, opt, sched, t.steps, unit))
    if handoff:  # Stage A's end, whole: Stage B resumes from it as from its own state
        unit = {"step": step, "best": best, "stopped": stopped, "records": records}
        unit.update(best_weights=best_weights, train_seconds=seconds + time.time() - t0)
        save_checkpoint(Path(handoff), pack(key, il, opt, sched, t.steps, unit))
    summary = {
        "steps": step,
        "best": best,
        "stopped": stopped,
        "train_seconds": seconds + time.time() - t0,
        "trainable_parameters": sum(p.numel() for p in params),
        "skipped_nonfinite_steps": skips.skipped,
        "state": str(state_path) if state_path.exists() else None,  # None: no step, nothing resumable
    }
    if handoff:  # a Stage A job: say where it stopped, and that 0 steps hand over the initial state
        summary.update(stop_at=stop, handoff=str(handoff))
        if stop == 0:
            summary["note"] = "no Stage A steps (encoder_warmup_steps = stage_a_steps = 0): initial state"
    write_outputs(
        out_dir, best_weights if best_weights is not None else trainable_weights(il), records, summary
    )
    return summary


def regress_start(il: Interlingua, run: LatentRunArgs, lms, sources, train_df) -> dict:
    """``adapter.init: regress`` (:mod:`latentwire.heads.regress_init`) on the first
    ``adapter.init_texts`` train contexts in a seeded order."""
    by_name = {lm.spec.name: lm for lm in [*lms, *(sources or [])]}
    src = by_name.get(source_model_name(run.latent.encoder) or "")
    if src is None:
        raise ConfigError("adapter.init regress: needs an encoder with a source_model")
    rows = select_examples(train_df, EvalArgs(n_examples=run.latent.adapter.init_texts, seed=run.train.seed))
    texts = [content_text(model_view(e), run.prompt) for e in rows]
    return fit_projectors(il, lms, src, texts)


def run_identity(run: LatentRunArgs, lms, sources, train_df, val_df, teacher_paths) -> dict:
    """Everything a training trajectory depends on, except ``train.steps`` (a longer run of the same
    settings continues a shorter one; :func:`~latentwire.training.optim.continues_schedule` checks
    that the schedules agree)."""
    cfg = to_dict(run)
    cfg["train"].pop("steps")
    kd = bool(run.loss.w_kd)
    return {
        "run": cfg,
        "models": [{"spec": to_dict(lm.spec), "manifest": lm.manifest} for lm in [*lms, *(sources or [])]],
        "prompts": {lm.spec.name: to_dict(prompt_for(lm.spec, run.prompt)) for lm in lms},  # as each reads
        "data": {"train": frame_digest(train_df), "validation": frame_digest(val_df)},
        "teachers": [file_identity(p) for p in teacher_paths or []] if kd else [],
    }
