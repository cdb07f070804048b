"""Latent training: encoder + adapters learn to make frozen receivers answer from Z.

``setup()`` builds everything; ``train()`` only iterates; validation is :func:`validate`. Each step
encodes the batch once, then runs each receiver's teacher-forced forward and backward in turn
(sequential backward bounds memory: each receiver's graph is freed before the next one's), feeding
the receivers' gradients into Z through a detached leaf; a step may accumulate micro-batches and
checkpoint the receivers' activations (:mod:`latentwire.training.grads`), and KD reads the text teacher's
logits cached once per model (:mod:`latentwire.training.teacher`). Resumable state (trainable weights,
optimizer, RNG, log) is one atomic checkpoint outside the outputs (:mod:`latentwire.training.checkpoint`); a
killed run resumes from it, and the outputs are written from it at the end.
The best checkpoint is picked on the VALIDATION split; a run whose predictions collapse stops.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from latentwire.batching import collate
from latentwire.config import ConfigError, must, to_dict
from latentwire.encoders import source_model_name
from latentwire.evaluation.evaluate import COLLAPSE_RATIO, EvalArgs, evaluate, model_view, select_examples
from latentwire.heads.adapters import embedding_rms
from latentwire.heads.deep_prefix import kv_shape
from latentwire.heads.gist import gist_loss
from latentwire.heads.lora import apply_lora
from latentwire.heads.vocab_align import shared_vocab_map
from latentwire.io import write_json
from latentwire.kv_prefix import kv_rms, with_prefix
from latentwire.latent.interlingua import Interlingua, LatentArgs, Receiver, mean_pairwise_cosine
from latentwire.latent.prompts import latent_inputs, latent_prompt_maker
from latentwire.models import LoadedModel
from latentwire.models.embed_scale import input_embed_scale
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, content_text, eos_id, prompt_for
from latentwire.scoring import answer_logits
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
from latentwire.training.grads import (
    add_part_grads,
    checkpointed_receivers,
    grad_norms,
    micro_batches,
    part_grads,
)
from latentwire.training.hidden import HiddenRecorder, hidden_mse
from latentwire.training.losses import LossArgs, loss_parts, masked_ce
from latentwire.training.nonfinite import SkipBudget, guarded_update
from latentwire.training.optim import make_optimizer
from latentwire.training.teacher import TeacherCache, load_teacher_caches, teacher_targets

log = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    """Optimisation and validation schedule."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    head_lr_scale: float = 1.0  # reading heads train at lr × this, the encoder at lr (latentwire.training.optim)
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    eval_every: int = 100
    val_examples: int = 48
    log_every: int = 10
    seed: int = 0
    collapse_ratio: float = COLLAPSE_RATIO  # stop if the unique-prediction share on validation falls below
    collapse_after: int = 100  # ... at or after this step
    accum_steps: int = 1  # micro-batches of batch_size per optimizer step (losses scaled by 1/accum_steps)
    # Stage A warm-up: for the first N steps the loss is first-token CE + stage_a_align × (1 − cos of the
    # mean soft token with the gold first token's input embedding); then Stage B, the full objective
    stage_a_steps: int = 0
    stage_a_align: float = 1.0
    grad_checkpointing: bool = False  # recompute the frozen receivers' layer activations in backward
    grad_norm_every: int = 0  # log each loss part's gradient norm every N steps (0 = off; extra backwards)
    # Stage A0: the first N steps train only the encoder's own auxiliary loss (e.g. select's scorer)
    # without running the receivers; needs an encoder that has one
    encoder_warmup_steps: int = 0
    # Stages A/B: which receivers run (empty = all) and whether the encoder trains with them. A subset
    # with a frozen encoder trains only those receivers' reading heads and leaves every other
    # receiver's input exactly as it was (e.g. on CPU: teach the small model the answer format)
    stage_b_models: list[str] = field(default_factory=list)
    stage_b_encoder: bool = True

    def validate(self) -> None:
        # every count and rate the loop divides by or schedules with, checked before any job starts
        for key in ("steps", "batch_size", "eval_every", "log_every", "accum_steps"):
            must(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        for key in ("warmup_steps", "val_examples", "grad_norm_every", "stage_a_steps", "collapse_after"):
            must(getattr(self, key) >= 0, key, getattr(self, key), ">= 0")
        must(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a positive number")
        must(
            math.isfinite(self.head_lr_scale) and self.head_lr_scale > 0,
            "head_lr_scale",
            self.head_lr_scale,
            "a positive number",
        )
        must(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        must(self.grad_clip > 0, "grad_clip", self.grad_clip, "> 0")
        must(self.stage_a_align >= 0, "stage_a_align", self.stage_a_align, ">= 0")
        must(0 <= self.collapse_ratio <= 1, "collapse_ratio", self.collapse_ratio, "in [0, 1]")
        must(
            0 <= self.encoder_warmup_steps <= self.steps,
            "encoder_warmup_steps",
            self.encoder_warmup_steps,
            f"in [0, steps = {self.steps}]",
        )


@dataclass
class LatentRunArgs:
    """Everything one latent training + evaluation run needs."""

    latent: LatentArgs = field(default_factory=LatentArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)
    loss: LossArgs = field(default_factory=LossArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)

    def validate(self) -> None:
        # transformers drops past_key_values inside a checkpointed layer: a KV prefix would vanish
        kv_prefix = self.latent.deep_prefix.enabled or self.latent.coprocessor.enabled
        if self.train.grad_checkpointing and kv_prefix:
            raise ValueError("train.grad_checkpointing: not with a KV prefix (deep_prefix, coprocessor)")
        if self.loss.w_gist and not self.latent.gist_tokens:
            raise ValueError("loss.w_gist > 0 needs latent.gist_tokens > 0 (the gist head's length)")


def build_interlingua(
    args: LatentArgs,
    lms: list[LoadedModel],
    device: torch.device,
    sources: list[LoadedModel] | None = None,
    private_of: dict[str, str] | None = None,
) -> Interlingua:
    """The trainable modules, sized for the receivers (width, input-embedding RMS, cache shape and
    K/V RMS for the deep prefix); with ``args.lora.rank`` > 0, LoRA is injected into each receiver
    (once) and attached, so it trains and is saved with the interlingua. ``sources``: loaded models
    that are not receivers but that the encoder reads (its ``source_model``). ``private_of``: see
    :class:`Interlingua` (receivers added to a trained wire)."""
    receivers = {lm.spec.name: receiver_of(lm, args) for lm in lms}
    models = {lm.spec.name: lm for lm in [*lms, *(sources or [])]}
    il = Interlingua(args, receivers, models, private_of).to(device)
    if args.shallow and args.adapter.init == "source_vocab":
        _align_adapters_to_source(il, args, lms, models)
    if args.lora.rank:
        for lm in lms:
            apply_lora(lm.model, args.lora)
            il.attach_lora(lm.spec.name, lm.model)
    return il


def _align_adapters_to_source(
    il: Interlingua, args: LatentArgs, lms: list[LoadedModel], models: dict
) -> None:
    """``adapter.init: source_vocab``: each receiver other than the encoder's source model starts its
    skip as the shared-vocabulary least-squares map from the source's embedding space (Z's space at
    init, hence the checks) into its own; the source receiver keeps the identity."""
    enc = args.encoder
    src_name = source_model_name(enc)
    if (
        src_name is None
        or enc.name != "select"
        or enc.select_features != "embed"
        or args.adapter.kind != "mlp"
    ):
        raise ConfigError(
            "adapter.init source_vocab: needs adapter.kind mlp and encoder select with select_features: embed"
        )
    src = models[src_name]
    src_emb = src.model.get_input_embeddings().weight
    if enc.d_z != src_emb.shape[1]:
        raise ConfigError(
            f"adapter.init source_vocab: encoder.d_z must equal {src_name}'s width {src_emb.shape[1]}"
        )
    for lm in lms:
        if lm.spec.name == src_name:
            continue
        w, n = shared_vocab_map(src.tokenizer, src_emb, lm.tokenizer, lm.model.get_input_embeddings().weight)
        skip = il.adapter(lm.spec.name).body.skip  # Linear(d_z, d_model): weight (d_model, d_z)
        with torch.no_grad():
            skip.weight.copy_(w.T.to(skip.weight))
        log.info("adapter %s: skip fitted on %d token strings shared with %s", lm.spec.name, n, src_name)


def receiver_of(lm: LoadedModel, args: LatentArgs) -> Receiver:
    """What the interlingua needs to know about ``lm``; K/V statistics only when the deep prefix is on."""
    emb = lm.model.get_input_embeddings().weight
    kv = None
    if args.deep_prefix.enabled or args.coprocessor.enabled:
        # calibration text: the prompt contract's own scaffold, real tokens the model always sees
        p = build_prompt(
            {"question": "Who?", "context": "Here."}, lm.tokenizer, PromptArgs(), lm.uses_chat_template
        )
        k_rms, v_rms = kv_rms(lm.model, torch.tensor([p.ids], device=lm.device))
        kv = kv_shape(lm.model, k_rms, v_rms)
    return Receiver(emb.shape[1], embedding_rms(emb, input_embed_scale(lm)), kv)


def _schedule(args: TrainArgs):
    def f(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(args.steps - args.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def _step_loss(
    lm: LoadedModel,
    il: Interlingua,
    run: LatentRunArgs,
    batch: list[dict],
    z: torch.Tensor,
    teacher_cache: TeacherCache | None = None,
    stage_a: bool = False,
):
    """One receiver's teacher-forced loss on Z. Returns (loss, parts, first-token accuracy).

    ``stage_a``: the warm-up objective instead (see ``TrainArgs.stage_a_steps``): first-token CE plus,
    with a shallow head, the alignment of the mean soft token to the gold first token's embedding.

    ``parts`` are the weighted loss terms as scalar tensors, still in the graph. KD reads the
    receiver's cached top-k teacher logits if given, else runs the text teacher now; the hidden-state
    MSE (``loss.w_hidden``) compares the student forward's recorded layer outputs with a fresh text
    teacher's (see :mod:`latentwire.training.hidden`).
    """
    hidden_layers = run.loss.hidden_layers if run.loss.w_hidden else []
    recorder = HiddenRecorder(lm.model, hidden_layers)  # keeps the student forward's states
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    views = [model_view(e) for e in batch]
    prompts, prefix = latent_inputs(lm, il, run.prompt, views, z)
    own = prompt_for(lm.spec, run.prompt)  # this receiver's prompt (registry override)
    golds = [answer_ids(e["answers"][0], tok, own, chat, eos) for e in batch]
    b, kw = with_prefix(lm.model, collate(lm.model, prompts, golds), prefix)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
        logits = answer_logits(lm.model, b, **kw)  # (B, A, V)
    student_h = recorder.stop()  # {layer: (B, T, d)}
    first_acc = float((logits[:, 0].argmax(-1) == b.answer_ids[:, 0]).float().mean())
    if stage_a:
        loss, parts = _stage_a_loss(lm, il, run, logits, b.answer_ids, z)
        return loss, parts, first_acc
    kd = bool(run.loss.w_kd)
    teacher, teacher_h = teacher_targets(lm, run.prompt, batch, golds, teacher_cache, kd, hidden_layers)
    parts = loss_parts(run.loss, logits, b.answer_ids, teacher)
    if hidden_layers:
        parts["hidden"] = run.loss.w_hidden * hidden_mse(student_h, teacher_h, b.answer_ids)
    if run.loss.w_gist:
        parts["gist"] = run.loss.w_gist * _gist_loss(lm, il, run, views, z)
    loss = sum(parts.values())
    return loss, parts, first_acc


def _gist_loss(lm: LoadedModel, il: Interlingua, run: LatentRunArgs, views: list[dict], z) -> torch.Tensor:
    """Masked MSE of the gist head's rebuild of the content embeddings (receiver's own tokens)."""
    T_max = run.latent.gist_tokens
    own = prompt_for(lm.spec, run.prompt)
    ids = [build_prompt(v, lm.tokenizer, own, lm.uses_chat_template).content[:T_max] for v in views]
    T = max(len(i) for i in ids)
    padded = torch.tensor([i + [0] * (T - len(i)) for i in ids], device=lm.device)  # (B, T)
    mask = torch.tensor([[j < len(i) for j in range(T)] for i in ids], device=lm.device)  # (B, T)
    with torch.no_grad():
        target = lm.model.get_input_embeddings()(padded)  # (B, T, d)
    pred = il.reconstruct(z, lm.spec.name, T)  # (B, T, d)
    return gist_loss(pred, target, mask, il.embed_rms[lm.spec.name])


def _stage_a_loss(lm: LoadedModel, il: Interlingua, run: LatentRunArgs, logits, answer_ids, z):
    """(loss, parts) of the Stage A warm-up for one receiver. logits (B, A, V), answer_ids (B, A)."""
    parts = {"first": masked_ce(logits, answer_ids, upto=1)}
    soft = il.read(z, lm.spec.name).soft  # (B, S, d) or None without the shallow head
    if soft is not None and run.train.stage_a_align:
        gold = lm.model.get_input_embeddings()(answer_ids[:, 0].clamp(min=0)).float()  # (B, d)
        cos = torch.nn.functional.cosine_similarity(soft.float().mean(1), gold, dim=-1)  # (B,)
        parts["align"] = run.train.stage_a_align * (1 - cos).mean()
    return sum(parts.values()), parts


def train_step(
    lms: list[LoadedModel],
    il: Interlingua,
    run: LatentRunArgs,
    batch: list[dict],
    params: list[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    sched=None,
    teachers: dict[str, TeacherCache] | None = None,
    log_grad_norms: bool = False,
    stage_a: bool = False,
    train_encoder: bool = True,
) -> dict:
    """One optimisation step on ``batch`` for every receiver; returns the step's log record.

    ``batch`` is cut into ``train.accum_steps`` micro-batches. Each is encoded once; each receiver's
    forward + backward runs in turn against a detached Z leaf (one receiver's graph alive at a time),
    then the summed Z gradient flows into the encoder. Losses are averaged over receivers and
    micro-batches, so the accumulated gradient is that of the whole batch; one clipped optimizer step
    follows. ``train_encoder`` False: Z is computed without a graph and the encoder gets no gradient
    (nor its auxiliary loss), so only the reading heads of ``lms`` move. ``teachers``: receiver
    name -> teacher-logit cache for KD. ``log_grad_norms`` adds
    ``grad_norms: {model: {part: norm}}``: the norm of each weighted loss part's gradient (mean over
    micro-batches, one receiver) w.r.t. ``params``, without changing the update.
    """
    micro = micro_batches(batch, run.train.accum_steps)
    record: dict = {lm.spec.name: {} for lm in lms}
    part_acc: dict[str, dict] = {lm.spec.name: {} for lm in lms}
    zs = []
    with checkpointed_receivers(lms, run.train.grad_checkpointing):
        for mb in micro:
            texts = [content_text(model_view(e), run.prompt) for e in mb]
            answers = [e["answers"] for e in mb]  # read by encoders' auxiliary heads only
            with torch.set_grad_enabled(train_encoder):
                z = il.encode(texts, answers=answers)  # (b, M, d_z)
            aux = il.encoder_aux_loss() if train_encoder else None  # e.g. select's scorer CE, or None
            z_leaf = z.detach().requires_grad_(True)
            for lm in lms:  # sequential backward: one receiver's graph at a time
                name = lm.spec.name
                loss, parts, first_acc = _step_loss(
                    lm, il, run, mb, z_leaf, (teachers or {}).get(name), stage_a
                )
                if log_grad_norms:  # before backward: the graph is retained for it
                    add_part_grads(part_acc[name], part_grads(parts, z, z_leaf, params, 1 / len(micro)))
                (loss / (len(lms) * len(micro))).backward()
                vals = {"loss": loss, **parts}
                vals = {**{k: float(v.detach()) for k, v in vals.items()}, "first_acc": first_acc}
                for k, v in vals.items():  # mean over micro-batches, for the log
                    record[name][k] = record[name].get(k, 0.0) + v / len(micro)
            if aux is not None:
                torch.autograd.backward([z, aux / len(micro)], [z_leaf.grad, None])
                enc = record.setdefault("encoder", {})
                for k, v in il.encoder_aux_record(aux).items():
                    enc[k] = enc.get(k, 0.0) + v / len(micro)
            elif train_encoder:
                z.backward(z_leaf.grad)
            zs.append(z.detach())
    record["z_cosine"] = mean_pairwise_cosine(torch.cat(zs))  # (B, M, d_z) over the whole batch
    if il.diagnostics():  # coprocessor: RMS of the cache deltas per layer (last micro-batch)
        record["coprocessor_delta_rms"] = il.diagnostics()
    if log_grad_norms:
        record["grad_norms"] = {name: grad_norms(acc) for name, acc in part_acc.items()}
    guarded_update(params, opt, run.train.grad_clip, record)  # skipped if the gradient is not finite
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return record


def encoder_step(
    il: Interlingua, run: LatentRunArgs, batch: list[dict], params: list[torch.nn.Parameter], opt, sched=None
) -> dict:
    """One Stage A0 step: the encoder's auxiliary loss alone (no receiver runs); returns its log record."""
    texts = [content_text(model_view(e), run.prompt) for e in batch]
    il.encode(texts, answers=[e["answers"] for e in batch])
    aux = il.encoder_aux_loss()
    if aux is None:
        raise ValueError(
            f"train.encoder_warmup_steps: encoder {run.latent.encoder.name!r} produced no auxiliary loss"
        )
    aux.backward()
    record = {"encoder": il.encoder_aux_record(aux)}
    guarded_update(params, opt, run.train.grad_clip, record)
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return record


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
    il = il if il is not None else build_interlingua(run.latent, lms, device, sources)
    if init_from:
        from latentwire.training.pretrain import load_pretrained  # pretrain builds on this module

        load_pretrained(il, init_from)
    params = il.trainable_parameters()
    opt = make_optimizer(il, t.lr, t.weight_decay, t.head_lr_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(t))
    train_rows = select_examples(train_df, EvalArgs(n_examples=0))
    teachers = {}
    if run.loss.w_kd:  # every training example must be in each cache: checked now, not at step N
        ids = [str(r["id"]) for r in train_rows]
        teachers = load_teacher_caches(lms, teacher_paths, run.prompt, run.loss.k_tokens, ids)
    val_rows = select_examples(val_df, EvalArgs(n_examples=t.val_examples, seed=t.seed))
    unit = resume(state_path, key, il, opt, sched, _continues(t))
    static_z = getattr(il.encoder, "input_independent", False)  # a soft-prompt control: never "collapsed"
    b_lms = [lm for lm in lms if not t.stage_b_models or lm.spec.name in t.stage_b_models]
    step, best, stopped = unit["step"], unit["best"], unit["stopped"]
    records, best_weights = unit["records"], unit["best_weights"]
    t0, seconds = time.time(), unit["train_seconds"]
    skips = SkipBudget.from_records(t.steps, "train", records)
    il.train()
    while step < t.steps and stopped == "completed":
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
            step_kw["train_encoder"] = t.stage_b_encoder
            record.update(train_step(b_lms, il, run, batch, params, opt, sched, **step_kw))
        step += 1
        skips.check(step, record, [e.get("id") for e in batch])
        if step % t.log_every == 0 or step == 1:
            log.info("step %d %s", step, {k: v for k, v in record.items() if k != "step"})
        if step % t.eval_every == 0 or step == t.steps:
            record["val"] = validate(lms, il, run, val_rows)
            log.info("step %d validation %s", step, record["val"])
            if record["val"]["mean_f1"] > best["mean_f1"]:
                best = {"mean_f1": record["val"]["mean_f1"], "step": step}
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
    summary = {
        "steps": step,
        "best": best,
        "stopped": stopped,
        "train_seconds": seconds + time.time() - t0,
        "trainable_parameters": sum(p.numel() for p in params),
        "skipped_nonfinite_steps": skips.skipped,
        "state": str(state_path),
    }
    write_outputs(
        out_dir, best_weights if best_weights is not None else trainable_weights(il), records, summary
    )
    return summary


def run_identity(run: LatentRunArgs, lms, sources, train_df, val_df, teacher_paths) -> dict:
    """Everything a training trajectory depends on, except ``train.steps`` (a longer run of the same
    settings continues a shorter one; :func:`_resume` checks that the schedules agree)."""
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


def _continues(t: TrainArgs):
    """(steps of a checkpoint's run, steps done) -> whether ``t`` continues that run's schedule."""

    def same(saved_steps: int, done: int) -> bool:
        old, new = _schedule(replace(t, steps=saved_steps)), _schedule(t)
        return done <= t.steps and all(old(s) == new(s) for s in range(done))

    return same
