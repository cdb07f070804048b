"""Latent training: encoder + adapters learn to make frozen receivers answer from Z.

``setup()`` builds everything; ``train()`` only iterates; validation is :func:`validate`. Each step
encodes the batch once, then runs each receiver's teacher-forced forward and backward in turn
(sequential backward bounds memory: each receiver's graph is freed before the next one's), feeding
the receivers' gradients into Z through a detached leaf. Checkpoints hold trainable weights only
(safetensors) plus optimizer state, written atomically; a killed run resumes from ``latest``.
The best checkpoint is picked on the VALIDATION split; a run whose predictions collapse stops.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from latentwire.adapters import embedding_rms
from latentwire.batching import collate
from latentwire.config import to_dict
from latentwire.evaluate import COLLAPSE_RATIO, EvalArgs, evaluate, model_view, select_examples
from latentwire.interlingua import Interlingua, LatentArgs, mean_pairwise_cosine
from latentwire.io import atomic_path, read_json, write_json
from latentwire.latent_prompts import latent_prompt_maker, latent_prompts
from latentwire.losses import LossArgs, total_loss
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, content_text, eos_id
from latentwire.scoring import answer_logits

log = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    """Optimisation and validation schedule."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    eval_every: int = 100
    val_examples: int = 48
    log_every: int = 10
    seed: int = 0
    collapse_ratio: float = COLLAPSE_RATIO  # stop if the unique-prediction share on validation falls below
    collapse_after: int = 100  # ... at or after this step


@dataclass
class LatentRunArgs:
    """Everything one latent training + evaluation run needs."""

    latent: LatentArgs = field(default_factory=LatentArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)
    loss: LossArgs = field(default_factory=LossArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


def build_interlingua(args: LatentArgs, lms: list[LoadedModel], device: torch.device) -> Interlingua:
    """The trainable modules, sized for the receivers (width and input-embedding RMS)."""
    receivers = {
        lm.spec.name: (
            lm.model.get_input_embeddings().weight.shape[1],
            embedding_rms(lm.model.get_input_embeddings().weight, lm.spec.input_embed_scale),
        )
        for lm in lms
    }
    return Interlingua(args, receivers).to(device)


def _schedule(args: TrainArgs):
    def f(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(args.steps - args.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def _step_loss(lm: LoadedModel, il: Interlingua, run: LatentRunArgs, batch: list[dict], z: torch.Tensor):
    """One receiver's teacher-forced loss on Z. Returns (loss, parts, first-token accuracy)."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    views = [model_view(e) for e in batch]
    prompts = latent_prompts(lm, il, run.prompt, views, z)
    golds = [answer_ids(e["answers"][0], tok, run.prompt, chat, eos) for e in batch]
    b = collate(lm.model, prompts, golds)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=lm.device.type == "cuda"):
        logits = answer_logits(lm.model, b)  # (B, A, V)
    teacher = None
    if run.loss.w_kd:
        with torch.no_grad():
            text = [build_prompt(v, tok, run.prompt, chat, "text").ids for v in views]
            embeds = [lm.model.get_input_embeddings()(torch.tensor(t, device=lm.device)) for t in text]
            teacher = answer_logits(lm.model, collate(lm.model, embeds, golds))
    loss, parts = total_loss(run.loss, logits, b.answer_ids, teacher)
    first_acc = float((logits[:, 0].argmax(-1) == b.answer_ids[:, 0]).float().mean())
    return loss, parts, first_acc


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
) -> dict:
    """Train, validate, checkpoint; returns a summary. Resumes from ``out_dir/latest`` if present."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = run.train
    torch.manual_seed(t.seed)
    il = build_interlingua(run.latent, lms, device)
    params = [p for p in il.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(t))
    train_rows = select_examples(train_df, EvalArgs(n_examples=0))
    val_rows = select_examples(val_df, EvalArgs(n_examples=t.val_examples, seed=t.seed))
    state = _resume(out_dir, il, opt, sched)
    step, best = state.get("step", 0), state.get("best", {"mean_f1": -1.0, "step": -1})
    log_path = out_dir / "train_log.jsonl"
    stopped = "completed"
    t0 = time.time()
    il.train()
    while step < t.steps:
        rng = np.random.default_rng(t.seed * 1_000_003 + step)  # per-step RNG: resumable without state
        batch = [train_rows[i] for i in rng.choice(len(train_rows), t.batch_size, replace=False)]
        texts = [content_text(model_view(e), run.prompt) for e in batch]
        z = il.encode(texts)  # (B, M, d_z)
        z_leaf = z.detach().requires_grad_(True)
        record = {"step": step + 1, "lr": sched.get_last_lr()[0]}
        for lm in lms:  # sequential backward: one receiver's graph at a time
            loss, parts, first_acc = _step_loss(lm, il, run, batch, z_leaf)
            (loss / len(lms)).backward()
            record[lm.spec.name] = {"loss": float(loss.detach()), **parts, "first_acc": first_acc}
        z.backward(z_leaf.grad)
        record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip))
        record["z_cosine"] = mean_pairwise_cosine(z.detach())
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % t.log_every == 0 or step == 1:
            log.info("step %d %s", step, {k: v for k, v in record.items() if k != "step"})
        if step % t.eval_every == 0 or step == t.steps:
            record["val"] = validate(lms, il, run, val_rows)
            log.info("step %d validation %s", step, record["val"])
            if record["val"]["mean_f1"] > best["mean_f1"]:
                best = {"mean_f1": record["val"]["mean_f1"], "step": step}
                _save_weights(out_dir / "best.safetensors", il)
            ratios = [record["val"][lm.spec.name]["unique_prediction_ratio"] for lm in lms]
            if step >= t.collapse_after and max(ratios) < t.collapse_ratio:
                stopped = "collapsed"
        _append(log_path, record)
        if step % t.eval_every == 0 or stopped != "completed" or step == t.steps:
            _checkpoint(out_dir, il, opt, sched, step, best)
        if stopped != "completed":
            log.error(
                "collapse: unique-prediction share below %.2f at step %d; stopping", t.collapse_ratio, step
            )
            break
    summary = {
        "steps": step,
        "best": best,
        "stopped": stopped,
        "train_seconds": time.time() - t0,
        "trainable_parameters": sum(p.numel() for p in params),
    }
    write_json(out_dir / "train_summary.json", summary)
    return summary


def _save_weights(path: Path, il: Interlingua) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in il.trainable_state_dict().items()}, str(tmp))


def _checkpoint(out_dir: Path, il, opt, sched, step: int, best: dict) -> None:
    _save_weights(out_dir / "latest.safetensors", il)
    with atomic_path(out_dir / "latest_state.pt") as tmp:
        torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp)
    write_json(out_dir / "latest.json", {"step": step, "best": best})


def _resume(out_dir: Path, il, opt, sched) -> dict:
    meta = out_dir / "latest.json"
    if not meta.is_file():
        return {}
    il.load_trainable_state_dict(load_file(str(out_dir / "latest.safetensors")))
    st = torch.load(out_dir / "latest_state.pt", weights_only=False)
    opt.load_state_dict(st["opt"])
    sched.load_state_dict(st["sched"])
    state = read_json(meta)
    log_path = out_dir / "train_log.jsonl"
    if log_path.is_file():  # drop records written after the checkpoint we resume from
        import json

        keep = [
            ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= state["step"]
        ]
        log_path.write_text("".join(ln + "\n" for ln in keep))
    log.info("resuming from step %d", state["step"])
    return state


def _append(path: Path, record: dict) -> None:
    import json

    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
