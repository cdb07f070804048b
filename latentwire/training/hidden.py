"""Hidden-state matching: MSE between the student's and the text teacher's early-layer states.

Student and teacher are the same frozen receiver; the student reads Z, the teacher the full text
prompt. The teacher runs on the fly every step under ``no_grad`` (NOT cached: per-layer states are
(A, d) per example, far larger than a top-k of logits). States are read with forward hooks on the
decoder layers (:class:`HiddenRecorder`), so the forwards themselves stay the ones scoring uses.

Alignment is by answer index, exactly as for logits (:mod:`latentwire.scoring`): every batch is
``[left-padded prompt (T_p) | right-padded answer (A)]``, and the state at column ``T_p - 1 + j``
is the one that predicts answer token j; counted from the end that is column ``-(A + 1) + j``, so
student and teacher line up although their prompts differ in length.

Layer index i is the OUTPUT of decoder layer i (0-based; HF ``hidden_states[i + 1]``).
"""

from __future__ import annotations

from functools import partial

import torch


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers in order (the modules transformers checkpoints)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


class HiddenRecorder:
    """Keeps the outputs of decoder layers ``layers`` from the LAST forward run while it is active.

    Created = recording; :meth:`stop` removes the hooks and returns ``{layer: (B, T, d)}``. Earlier
    forwards of the same model while recording (e.g. a coprocessor's first pass) are overwritten.
    """

    def __init__(self, model: torch.nn.Module, layers: list[int]) -> None:
        blocks = decoder_layers(model)
        bad = [i for i in layers if not 0 <= i < len(blocks)]
        if bad:
            raise ValueError(f"loss.hidden_layers {bad}: the model has decoder layers 0..{len(blocks) - 1}")
        self.states: dict[int, torch.Tensor] = {}
        self._hooks = [blocks[i].register_forward_hook(partial(self._keep, i)) for i in layers]

    def _keep(self, i: int, module, args, output) -> None:
        self.states[i] = output[0] if isinstance(output, tuple) else output  # (B, T, d)

    def stop(self) -> dict[int, torch.Tensor]:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.states


def answer_states(h: torch.Tensor, A: int) -> torch.Tensor:
    """States of the A columns that predict the answer tokens. (B, T, d) -> (B, A, d)."""
    return h[:, -(A + 1) : -1]


def hidden_mse(
    student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor], answer_ids: torch.Tensor
) -> torch.Tensor:
    """Mean over layers of the masked MSE (mean over d) between aligned answer-position states.

    ``student`` and ``teacher`` map layer -> (B, T_s, d) / (B, T_t, d) from forwards whose answers
    are ``answer_ids`` (B, A), -100 on padding. Scalar (float32).
    """
    A = answer_ids.shape[1]
    mask = (answer_ids != -100).float()  # (B, A)
    losses = []
    for i, s in student.items():
        diff = answer_states(s, A).float() - answer_states(teacher[i], A).float()  # (B, A, d)
        losses.append((diff.pow(2).mean(-1) * mask).sum() / mask.sum().clamp(min=1))
    return torch.stack(losses).mean()
