"""The non-finite update guard shared by every training loop (latentwire.training.nonfinite)."""

import pytest
import torch

from latentwire.training.nonfinite import SkipBudget, guarded_update, max_skipped


def _setup(grad: float):
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.full((3,), grad)
    return w, opt


def test_a_finite_gradient_is_clipped_and_applied():
    w, opt = _setup(10.0)
    record: dict = {}
    assert guarded_update([w], opt, 1.0, record)
    assert record["grad_norm"] == pytest.approx(10.0 * 3**0.5)
    assert "skipped_nonfinite" not in record
    assert torch.allclose(w.detach(), torch.full((3,), 1 - 0.1 / 3**0.5))  # clipped to norm 1


@pytest.mark.parametrize("grad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_leaves_the_weights_alone(grad):
    w, opt = _setup(grad)
    record: dict = {}
    assert not guarded_update([w], opt, 1.0, record)
    assert record["skipped_nonfinite"] is True
    assert torch.equal(w.detach(), torch.ones(3))


def test_a_non_finite_loss_skips_even_with_a_finite_gradient():
    w, opt = _setup(1.0)
    assert not guarded_update([w], opt, 1.0, {"loss": float("nan")})
    assert torch.equal(w.detach(), torch.ones(3))


def test_the_budget_counts_skips_and_stops_past_five_percent():
    assert max_skipped(100) == 10 and max_skipped(1000) == 50
    budget = SkipBudget.from_records(100, "train", [{"step": 1}, {"step": 2, "skipped_nonfinite": True}])
    assert budget.skipped == [2]
    budget.check(3, {"grad_norm": 1.0})
    for step in range(4, 13):
        budget.check(step, {"skipped_nonfinite": True})
    assert len(budget.skipped) == 10
    with pytest.raises(FloatingPointError, match=r"train: 11 of 13 steps non-finite"):
        budget.check(13, {"skipped_nonfinite": True})
