"""What ``latentwire bench`` measures and at which shapes, and the issue's targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from latentwire.models.synthetic import Family, Shapes
from latentwire.training.args import LatentRunArgs
from latentwire.training.pretrain import PretrainArgs

Phase = Literal["ceiling", "step", "eval", "pretrain"]
NO_EOS = {-1}  # decode always runs decode_tokens steps: random weights may emit eos at any time
#: The targets on one H200, hero shapes, bf16, B=64, M=32, A=16 (docs/benchmarks.md; issue #17 raised
#: the step's share of the minimal-work ceiling to 0.85 and added the two-model throughput).
TARGETS = {"step_over_ceiling": 0.85, "step_samples_per_min": 7500.0, "text_over_latent_prefill": 8.0}


@dataclass
class BenchArgs:
    """What to measure and at which shapes. ``run`` is the latent run whose step (b) times."""

    shapes: Shapes = "hero"  # hero: Llama-3.1-8B / Qwen2.5-7B sizes; tiny: the 2-layer test models
    models: list[Family] = field(default_factory=lambda: ["llama", "qwen2"])
    batch_size: int = 64  # B
    slots: int = 32  # M: soft tokens each receiver reads (= run.latent n_shared + n_private)
    answer_tokens: int = 16  # A: gold answer ids per example, end-of-answer included
    answer_spread: int = 0  # > 0: answer lengths drawn from A - spread .. A, so batches carry padding
    text_tokens: int = 320  # length of the text prompt the latent stands in for
    decode_tokens: int = 16  # greedy tokens generated after each prefill (decode latency)
    # end-to-end latency (encoder + adapter + prefill) also at these batch sizes (rows repeat past B)
    eval_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    warmup: int = 3
    iters: int = 5
    phases: list[Phase] = field(default_factory=lambda: ["ceiling", "step", "eval"])
    # with phase "ceiling": also the earlier whole-row ceiling (``ceiling_full_prompt``), kept for
    # continuity; off saves its compile warm-up (~160 s on an H100) when device time is short
    full_prompt_ceiling: bool = True
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    attn: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # torch.compile the receivers for (a) and (b); eval stays eager. None: on where it wins (CUDA;
    # on the H200 it cut the step 17 %, docs/benchmarks.md), off on CPU
    compile: bool | None = None
    nf4: bool = False  # 4-bit NF4 decoder weights (bitsandbytes, CUDA only)
    # > 0: after the timed steps, this many more under torch.profiler (latentwire.bench.profile):
    # the step's labelled regions, device busy vs wall time and the top operators, in step.profile
    profile_steps: int = 0
    seed: int = 0
    run: LatentRunArgs = field(default_factory=LatentRunArgs)
    # phase "pretrain" (latentwire.bench.pretrain): the encoder pretraining step at this batch size
    # and task mix, on run.latent's interlingua (pooled-lm names a receiver as its source_model)
    pretrain: PretrainArgs = field(default_factory=PretrainArgs)

    def validate(self) -> None:
        for key in ("batch_size", "slots", "answer_tokens", "text_tokens", "decode_tokens", "iters"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.answer_tokens < 2:
            raise ValueError("answer_tokens: must be >= 2 (one answer token plus end-of-answer)")
        if not 0 <= self.answer_spread <= self.answer_tokens - 2:
            raise ValueError(f"answer_spread: must be in [0, answer_tokens - 2], got {self.answer_spread}")
        if any(b < 1 for b in self.eval_batch_sizes):
            raise ValueError(f"eval_batch_sizes: each must be >= 1, got {self.eval_batch_sizes}")
        if self.profile_steps < 0:
            raise ValueError(f"profile_steps: must be >= 0, got {self.profile_steps}")
        if self.warmup < 0:
            raise ValueError(f"warmup: must be >= 0, got {self.warmup}")
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models: need at least one family, each once; got {self.models}")
        if not self.phases or len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases: need at least one phase, each once; got {self.phases}")
        if self.slots <= self.run.latent.n_private:
            raise ValueError(
                f"slots: {self.slots} must exceed run.latent.n_private ({self.run.latent.n_private}); "
                "the bench sets n_shared = slots - n_private"
            )


def resolve_compile(value: bool | None, device: torch.device) -> bool:
    """``None`` → compile on CUDA only."""
    return device.type == "cuda" if value is None else value


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on CUDA, fp32 elsewhere (as registry models load)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
