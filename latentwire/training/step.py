"""One latent training step over every receiver, and the per-receiver losses it sums.

:func:`train_step` encodes the batch once, then runs each receiver's teacher-forced forward and
backward in turn against a detached Z leaf (sequential backward bounds memory: each receiver's graph
is freed before the next one's) and feeds the summed Z gradient into the encoder; a step may
accumulate micro-batches and checkpoint the receivers' activations (:mod:`latentwire.training.grads`),
and KD reads the text teacher's logits cached once per model (:mod:`latentwire.training.teacher`).
:func:`encoder_step` is Stage A0: the encoder's own auxiliary loss alone. Both end in one guarded,
clipped optimizer update (:mod:`latentwire.training.nonfinite`).
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from latentwire.batching import collate
from latentwire.evaluation.evaluate import model_view
from latentwire.heads.gist import gist_loss
from latentwire.kv_prefix import with_prefix
from latentwire.latent.interlingua import Interlingua, mean_pairwise_cosine
from latentwire.latent.prompts import encode_views, latent_inputs
from latentwire.models import LoadedModel
from latentwire.prompt import answer_ids, build_prompt, content_text, eos_id, prompt_for
from latentwire.scoring import answer_logits
from latentwire.training.args import LatentRunArgs
from latentwire.training.grads import (
    add_part_grads,
    checkpointed_receivers,
    grad_norms,
    micro_batches,
    part_grads,
)
from latentwire.training.hidden import HiddenRecorder, hidden_mse
from latentwire.training.losses import loss_parts, masked_ce
from latentwire.training.nonfinite import guarded_update
from latentwire.training.teacher import TeacherCache, teacher_targets


def _step_loss(
    lm: LoadedModel,
    il: Interlingua,
    run: LatentRunArgs,
    batch: list[dict],
    z: torch.Tensor,
    teacher_cache: TeacherCache | None = None,
    stage_a: bool = False,
):
    """One receiver's teacher-forced loss on Z. Returns (loss, parts, first-token accuracy), all
    scalar tensors (read back once per step, so the host never waits on the device mid-step).

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
    filled = il.filled([content_text(v, run.prompt) for v in views])  # None unless latent.trim_pad
    prompts, prefix = latent_inputs(lm, il, run.prompt, views, z, filled)
    own = prompt_for(lm.spec, run.prompt)  # this receiver's prompt (registry override)
    golds = [answer_ids(e["answers"][0], tok, own, chat, eos) for e in batch]
    b, kw = with_prefix(lm.model, collate(lm.model, prompts, golds), prefix)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
        logits = answer_logits(lm.model, b, **kw)  # (B, A, V)
    student_h = recorder.stop()  # {layer: (B, T, d)}
    first_acc = (logits[:, 0].argmax(-1) == b.answer_ids[:, 0]).float().mean()  # scalar tensor: no sync
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


def _encoder_autocast(lms: list[LoadedModel], run: LatentRunArgs):
    """bf16 autocast around the encoder on CUDA when ``train.encoder_autocast`` asks (else a no-op)."""
    device = lms[0].device.type
    return torch.autocast(
        device, dtype=torch.bfloat16, enabled=run.train.encoder_autocast and device == "cuda"
    )


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
    logged: dict[str, dict[str, torch.Tensor]] = {lm.spec.name: {} for lm in lms}  # device scalars
    zs = []
    with checkpointed_receivers(lms, run.train.grad_checkpointing):
        for mb in micro:
            views = [model_view(e) for e in mb]
            answers = [e["answers"] for e in mb]  # read by encoders' auxiliary heads only
            with (
                torch.set_grad_enabled(train_encoder),
                record_function("encode"),
                _encoder_autocast(lms, run),
            ):
                z, _ = encode_views(il, views, run.prompt, answers)  # (b, M, d_z)
            if run.train.encoder_autocast:
                z = z.float()  # the receivers' heads read fp32 Z either way
            aux = il.encoder_aux_loss() if train_encoder else None  # e.g. select's scorer CE, or None
            z_leaf = z.detach().requires_grad_(True)
            for lm in lms:  # sequential backward: one receiver's graph at a time
                name = lm.spec.name
                with record_function(f"forward:{name}"):
                    loss, parts, first_acc = _step_loss(
                        lm, il, run, mb, z_leaf, (teachers or {}).get(name), stage_a
                    )
                if log_grad_norms:  # before backward: the graph is retained for it
                    add_part_grads(part_acc[name], part_grads(parts, z, z_leaf, params, 1 / len(micro)))
                with record_function(f"backward:{name}"):
                    (loss / (len(lms) * len(micro))).backward()
                vals = {"loss": loss, **parts, "first_acc": first_acc}
                for k, v in vals.items():  # mean over micro-batches, for the log (still on the device)
                    v = v.detach().float() / len(micro)
                    logged[name][k] = logged[name][k] + v if k in logged[name] else v
            with record_function("encoder_backward"):
                if aux is not None:
                    torch.autograd.backward([z, aux / len(micro)], [z_leaf.grad, None])
                    enc = record.setdefault("encoder", {})
                    for k, v in il.encoder_aux_record(aux).items():
                        enc[k] = enc.get(k, 0.0) + v / len(micro)
                elif train_encoder:
                    z.backward(z_leaf.grad)
            zs.append(z.detach())
    for name, vals in logged.items():  # one device-to-host copy for every logged scalar of the step
        if vals:
            record[name].update(zip(vals, torch.stack(list(vals.values())).tolist()))
    record["z_cosine"] = mean_pairwise_cosine(torch.cat(zs))  # (B, M, d_z) over the whole batch
    if il.diagnostics():  # coprocessor: RMS of the cache deltas per layer (last micro-batch)
        record["coprocessor_delta_rms"] = il.diagnostics()
    if log_grad_norms:
        record["grad_norms"] = {name: grad_norms(acc) for name, acc in part_acc.items()}
    with record_function("update"):
        guarded_update(params, opt, run.train.grad_clip, record)  # skipped if the gradient is not finite
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return record


def encoder_step(
    il: Interlingua, run: LatentRunArgs, batch: list[dict], params: list[torch.nn.Parameter], opt, sched=None
) -> dict:
    """One Stage A0 step: the encoder's auxiliary loss alone (no receiver runs); returns its log record."""
    encode_views(il, [model_view(e) for e in batch], run.prompt, [e["answers"] for e in batch])
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
