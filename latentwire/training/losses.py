"""Training losses, all computed from ONE teacher-forced forward's answer logits.

``logits`` (B, A, V) predict answer tokens ``answer_ids`` (B, A) (-100 on padding), aligned by
answer index j (see :mod:`latentwire.scoring`). The text teacher's logits for the same example are
aligned the same way, so KD position j of student and teacher always refer to the same answer token.
The teacher comes either as full logits (B, A_t, V), computed on the fly, or as a cached top-k
(:class:`TopKTeacher`, see :mod:`latentwire.training.teacher`); both KD forms agree when k = V.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class LossArgs:
    """Loss weights. The total is the weighted sum of the enabled parts."""

    w_answer: float = 1.0  # full-answer CE (mean over answer tokens incl. end-of-answer)
    w_first: float = 0.5  # CE of the first answer token (λ_first)
    w_ktoken: float = 0.0  # CE over the first K answer tokens
    k_tokens: int = 4
    w_kd: float = 0.0  # KL to the text teacher over the first K answer steps
    kd_tau: float = 2.0
    # MSE to the text teacher's hidden states at the answer positions (latentwire.training.hidden), averaged
    # over these decoder layers (i = output of layer i); the teacher runs on the fly, never cached
    w_hidden: float = 0.0
    hidden_layers: list[int] = field(default_factory=list)
    w_gist: float = 0.0  # gist reconstruction MSE (needs latent.gist_tokens > 0; latentwire.heads.gist)

    def validate(self) -> None:
        if self.k_tokens < 1 or self.kd_tau <= 0:
            raise ValueError("k_tokens must be >= 1 and kd_tau > 0")
        if self.w_hidden and not self.hidden_layers:
            raise ValueError("w_hidden > 0 needs hidden_layers (decoder layer indices)")
        if any(i < 0 for i in self.hidden_layers):
            raise ValueError("hidden_layers are decoder layer indices >= 0")


def masked_ce(logits: torch.Tensor, answer_ids: torch.Tensor, upto: int | None = None) -> torch.Tensor:
    """Mean CE over real answer tokens (optionally only the first ``upto``). Scalar."""
    if upto is not None:
        logits, answer_ids = logits[:, :upto], answer_ids[:, :upto]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), answer_ids.reshape(-1), ignore_index=-100)


def kd_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    answer_ids: torch.Tensor,
    tau: float,
    k: int,
) -> torch.Tensor:
    """KL(teacher || student) at temperature ``tau`` over the first ``k`` answer steps, × tau².

    ``teacher_logits`` (B, A_t, V) come from the same model reading the text prompt; positions are
    aligned by answer index, so only the first min(A, A_t, k) steps are compared. Scalar.
    """
    n = min(logits.shape[1], teacher_logits.shape[1], k)
    mask = (answer_ids[:, :n] != -100).float()  # (B, n)
    s = F.log_softmax(logits[:, :n] / tau, dim=-1)
    t = F.log_softmax(teacher_logits[:, :n].float() / tau, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # (B, n)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * tau**2


@dataclass
class TopKTeacher:
    """The text teacher's top-k logits per answer step, as cached by :mod:`latentwire.training.teacher`."""

    values: torch.Tensor  # (B, K_t, k) float (float16 in the cache), descending per step
    indices: torch.Tensor  # (B, K_t, k) long: vocabulary ids of ``values``


def topk_kd_loss(
    logits: torch.Tensor,
    teacher: TopKTeacher,
    answer_ids: torch.Tensor,
    tau: float,
    k: int,
) -> torch.Tensor:
    """KL(teacher || student) at temperature ``tau`` on the teacher's top-k support, × tau².

    The teacher is renormalised over its k cached logits at ``tau``; the student is log-softmaxed
    over the FULL vocabulary at ``tau`` and read at the teacher's k indices, so student mass off the
    support still costs (the sum is >= 0 and equals :func:`kd_loss` when k = V). Positions are
    aligned by answer index; only the first min(A, K_t, ``k``) steps count, masked by answer length.
    ``logits`` (B, A, V); ``answer_ids`` (B, A) with -100 on padding. Scalar.
    """
    n = min(logits.shape[1], teacher.values.shape[1], k)
    mask = (answer_ids[:, :n] != -100).float()  # (B, n)
    s = F.log_softmax(logits[:, :n] / tau, dim=-1)  # (B, n, V)
    s = s.gather(-1, teacher.indices[:, :n].long())  # (B, n, k)
    t = F.log_softmax(teacher.values[:, :n].float() / tau, dim=-1)  # (B, n, k)
    kl = (t.exp() * (t - s)).sum(-1)  # (B, n)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * tau**2


def loss_parts(
    args: LossArgs,
    logits: torch.Tensor,
    answer_ids: torch.Tensor,
    teacher: torch.Tensor | TopKTeacher | None = None,
) -> dict[str, torch.Tensor]:
    """The enabled losses, each already weighted, as scalar tensors (still in the graph).

    ``teacher`` is full logits (B, A_t, V) or a cached :class:`TopKTeacher`; needed when w_kd > 0.
    """
    parts: dict[str, torch.Tensor] = {}
    if args.w_answer:
        parts["answer"] = args.w_answer * masked_ce(logits, answer_ids)
    if args.w_first:
        parts["first"] = args.w_first * masked_ce(logits, answer_ids, upto=1)
    if args.w_ktoken:
        parts["ktoken"] = args.w_ktoken * masked_ce(logits, answer_ids, upto=args.k_tokens)
    if args.w_kd:
        if teacher is None:
            raise ValueError("w_kd > 0 needs teacher logits")
        kd = topk_kd_loss if isinstance(teacher, TopKTeacher) else kd_loss
        parts["kd"] = args.w_kd * kd(logits, teacher, answer_ids, args.kd_tau, args.k_tokens)
    return parts


def total_loss(
    args: LossArgs,
    logits: torch.Tensor,
    answer_ids: torch.Tensor,
    teacher_logits: torch.Tensor | TopKTeacher | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled losses and their values for logging."""
    parts = loss_parts(args, logits, answer_ids, teacher_logits)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}
