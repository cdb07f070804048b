"""The settings of one latent run: the optimisation schedule and everything a run composes.

:class:`TrainArgs` is the ``train:`` section of an experiment (steps, batch, learning rates, the
Stage A0 / A / B schedule, validation cadence, the collapse stop); :class:`LatentRunArgs` composes it
with the interlingua's modules (``latent``), the prompt contract, the losses and evaluation, as the
workflow config's ``latent.experiments.<name>`` holds them. Both are validated strictly when the
workflow parses its config (:mod:`latentwire.workflow`), so ``snakemake -n`` names a bad key before
any job starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from latentwire.config import must
from latentwire.evaluation.evaluate import COLLAPSE_RATIO, EvalArgs
from latentwire.latent.interlingua import LatentArgs
from latentwire.prompt import PromptArgs
from latentwire.training.losses import LossArgs


@dataclass
class TrainArgs:
    """Optimisation and validation schedule."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    head_lr_scale: float = 1.0  # reading heads train at lr × this, the encoder at lr (training.optim)
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
    # projector-only warm-up: for the first N steps of Stages A/B the encoder is frozen (Z without a
    # graph) and only the reading heads train, so a head's start (adapter.init regress) is not
    # shaken by a shared trunk moving under every receiver's gradients at once
    encoder_frozen_steps: int = 0
    # Stages A/B: one receiver drawn per step (seeded by the step, as ARC-Encoder fine-tunes) instead
    # of every receiver in turn; the drawn receiver's loss then carries the step's whole gradient
    sample_receiver: bool = False
    # validate once before step 1 (a fresh run): the start's F1 is logged, kept in the summary
    # (``start_val``) and is a candidate for the best checkpoint like every later validation
    eval_at_start: bool = False
    # run the encoder's training forward (and so its backward) under bf16 autocast on CUDA; its
    # parameters stay fp32. Off by default until its F1 cost is measured (on the H200 profile the
    # fp32 byte encoder's forward alone was 22.5 ms of a 729 ms step; bench row encbf16)
    encoder_autocast: bool = False

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
            0 <= self.encoder_frozen_steps <= self.steps,
            "encoder_frozen_steps",
            self.encoder_frozen_steps,
            f"in [0, steps = {self.steps}]",
        )
        must(
            0 <= self.encoder_warmup_steps <= self.steps,
            "encoder_warmup_steps",
            self.encoder_warmup_steps,
            f"in [0, steps = {self.steps}]",
        )

    def stage_a_end(self) -> int:
        """Steps of Stage A (A0: ``encoder_warmup_steps``, A: ``stage_a_steps``), where Stage B starts:
        the ``stage_a`` job runs steps 1..this, ``stage_b`` the rest to ``steps``."""
        return min(self.steps, max(self.encoder_warmup_steps, self.stage_a_steps))


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
        # with replaces=question_context the content already holds the question: a question-conditioned
        # encoder would read it twice and pool it into slots, so its payload would carry the question
        if self.latent.encoder.question_template and self.prompt.replaces != "context":
            raise ValueError(
                "latent.encoder.question_template: needs prompt.replaces: context (with "
                f"{self.prompt.replaces!r} the content already holds the question)"
            )
