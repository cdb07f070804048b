"""Guard an optimizer update against a non-finite gradient, and stop a run that keeps producing them.

Seen on the GPU in bf16: about 1 % of steps get a finite loss but a NaN gradient (the backward of
the attention over left-padded rows is the suspect). One such update turns every trainable weight
into NaN and the rest of the run trains nothing, so each training loop (latent, pretraining, text
ceilings) clips through :func:`guarded_update`, which skips the update instead, and counts the
skips with :class:`SkipBudget`, which stops the run once more than 5 % of its steps (at least 10)
were skipped: then something is really wrong and the numbers would not be the recipe's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

log = logging.getLogger(__name__)


def max_skipped(steps: int) -> int:
    """How many non-finite steps a run may skip before it stops: 5 % of its steps, at least 10."""
    return max(10, steps // 20)


def guarded_update(
    params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, clip: float, record: dict
) -> bool:
    """Clip the gradient of ``params`` to norm ``clip`` and step ``opt`` unless the norm (or
    ``record["loss"]``, if present) is not finite. Writes ``record["grad_norm"]`` and, for a
    skipped update, ``record["skipped_nonfinite"] = True``. Returns whether the update was applied.
    The caller still steps its scheduler and zeroes the gradients."""
    record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
    finite = math.isfinite(record["grad_norm"]) and math.isfinite(record.get("loss", 0.0))
    if finite:
        opt.step()
    else:
        record["skipped_nonfinite"] = True
    return finite


class SkipBudget:
    """The steps a run skipped, checked against :func:`max_skipped` of its length."""

    def __init__(self, steps: int, where: str, skipped: Iterable[int] = ()):
        self.steps, self.where, self.skipped = steps, where, list(skipped)

    @classmethod
    def from_records(cls, steps: int, where: str, records: Iterable[dict]) -> SkipBudget:
        """Rebuilt from a resumed run's log records."""
        return cls(steps, where, [r["step"] for r in records if r.get("skipped_nonfinite")])

    def check(self, step: int, record: dict, rows: list | None = None) -> None:
        """Count ``step`` if its update was skipped; raise FloatingPointError past the budget."""
        if not record.get("skipped_nonfinite"):
            return
        self.skipped.append(step)
        log.warning(
            "%s step %d: non-finite loss/gradient, update skipped (%s); rows %s",
            self.where,
            step,
            record,
            rows,
        )
        if len(self.skipped) > max_skipped(self.steps):
            raise FloatingPointError(
                f"{self.where}: {len(self.skipped)} of {step} steps non-finite (steps {self.skipped[:20]})"
            )
