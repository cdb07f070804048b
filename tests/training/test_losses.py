"""Training losses checked against hand computations: masked CE, position-aligned KD, weighted total."""

import math

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.training.losses import LossArgs, TopKTeacher, kd_loss, masked_ce, topk_kd_loss, total_loss

LN2, LN3 = math.log(2.0), math.log(3.0)
BIG = 50.0  # logits that would dominate any value they were wrongly included in


def _ce_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """B=2, A=3, V=3. Row 0: two real tokens then padding; row 1: one real token then padding.

    softmax([0, ln2, 0]) = [1/4, 1/2, 1/4] and softmax([0, 0, 0]) = [1/3, 1/3, 1/3], so the real
    tokens cost -ln(1/4) = ln4, -ln(1/3) = ln3 and -ln(1/2) = ln2. Padded positions hold logits
    that would add a huge loss if they counted.
    """
    logits = torch.tensor(
        [
            [[0.0, LN2, 0.0], [0.0, 0.0, 0.0], [BIG, -BIG, 0.0]],
            [[0.0, LN2, 0.0], [BIG, -BIG, 0.0], [BIG, -BIG, 0.0]],
        ]
    )
    ids = torch.tensor([[0, 2, -100], [1, -100, -100]])
    return logits, ids


def test_masked_ce_is_the_token_mean_over_real_tokens():
    logits, ids = _ce_batch()
    # mean over the three real tokens of the batch (not a mean of per-example means)
    assert masked_ce(logits, ids).item() == pytest.approx((2 * LN2 + LN3 + LN2) / 3, abs=1e-6)


def test_masked_ce_upto_restricts_positions():
    logits, ids = _ce_batch()
    assert masked_ce(logits, ids, upto=1).item() == pytest.approx((2 * LN2 + LN2) / 2, abs=1e-6)
    assert masked_ce(logits, ids, upto=2).item() == pytest.approx((2 * LN2 + LN3 + LN2) / 3, abs=1e-6)
    # a padded token at the first position of row 1 drops out of upto=1 entirely
    ids2 = torch.tensor([[0, 2, -100], [-100, -100, -100]])
    assert masked_ce(logits, ids2, upto=1).item() == pytest.approx(2 * LN2, abs=1e-6)


def _kl(p_logits: list[float], q_logits: list[float], tau: float) -> float:
    """KL(softmax(p/tau) || softmax(q/tau)) by hand."""

    def softmax(x):
        e = [math.exp(v / tau) for v in x]
        return [v / sum(e) for v in e]

    p, q = softmax(p_logits), softmax(q_logits)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kd_is_zero_for_identical_logits_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 4, 7, generator=g)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100]])
    assert kd_loss(s, s.clone(), ids, tau=2.0, k=4).item() == pytest.approx(0.0, abs=1e-7)
    t = s + torch.randn(2, 4, 7, generator=g)
    assert kd_loss(s, t, ids, tau=2.0, k=4).item() > 1e-3


# V=2 logits per position, chosen so any off-by-one pairing changes the value:
T0, T1 = [0.0, 0.0], [LN3, 0.0]  # teacher: p=[1/2, 1/2], then p=[3/4, 1/4]
S0, S1 = [0.0, 0.0], [0.0, 0.0]  # student: uniform at the two compared positions


def test_kd_aligns_positions_when_teacher_is_shorter():
    """Student A=3, teacher A_t=2, k=4: only answer positions 0 and 1 count, paired by index."""
    student = torch.tensor([[S0, S1, [BIG, -BIG]]])  # position 2 has no teacher: must be ignored
    teacher = torch.tensor([[T0, T1]])
    ids = torch.tensor([[0, 1, 1]])
    expected = (0.0 + _kl(T1, S1, 1.0)) / 2  # = (3/4 ln(3/2) + 1/4 ln(1/2)) / 2
    assert expected == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2)
    got = kd_loss(student, teacher, ids, tau=1.0, k=4).item()
    assert got == pytest.approx(expected, abs=1e-6)
    # the two wrong pairings a shift by one would produce give different numbers
    assert abs(got - (_kl(T0, S1, 1.0) + _kl(T1, [BIG, -BIG], 1.0)) / 2) > 1e-2
    assert abs(got - _kl(T1, S0, 1.0)) > 1e-3 and abs(got - _kl(T1, S1, 1.0)) > 1e-3


def test_kd_aligns_positions_when_teacher_is_longer_and_scales_by_tau_squared():
    """Student A=2, teacher A_t=4 (extra positions must be ignored), tau=2 multiplies by 4."""
    student = torch.tensor([[S0, [1.0, -1.0]]])
    teacher = torch.tensor([[T0, T1, [BIG, -BIG], [-BIG, BIG]]])
    ids = torch.tensor([[0, 1]])
    tau = 2.0
    expected = (_kl(T0, S0, tau) + _kl(T1, [1.0, -1.0], tau)) / 2 * tau**2
    got = kd_loss(student, teacher, ids, tau=tau, k=4).item()
    assert got == pytest.approx(expected, abs=1e-6)
    shifted = (_kl(T1, S0, tau) + _kl([BIG, -BIG], [1.0, -1.0], tau)) / 2 * tau**2
    assert abs(got - shifted) > 1e-2


def test_kd_counts_only_the_first_k_real_positions():
    student = torch.tensor([[S0, S1, S1], [S0, S1, S1]])
    teacher = torch.tensor([[T1, T1, T1], [T1, T1, T1]])
    kl = _kl(T1, S0, 1.0)
    full = torch.tensor([[0, 1, 1], [0, 1, 1]])
    assert kd_loss(student, teacher, full, tau=1.0, k=1).item() == pytest.approx(kl, abs=1e-6)
    # padding is masked and the mean is over the real (position, example) pairs of the batch
    student[1, 1] = torch.tensor([BIG, -BIG])  # would blow up the value if the padded slot counted
    padded = torch.tensor([[0, 1, 1], [0, -100, -100]])
    assert kd_loss(student, teacher, padded, tau=1.0, k=2).item() == pytest.approx(kl, abs=1e-6)


def test_topk_kd_with_k_equal_v_is_the_full_kd():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 4, 9, generator=g), 3 * torch.randn(2, 5, 9, generator=g)
    ids = torch.tensor([[1, 2, 3, -100], [5, -100, -100, -100]])
    top = t.topk(9, dim=-1)  # every logit, in another order: the support is the whole vocabulary
    teacher = TopKTeacher(top.values.half(), top.indices.int())  # as cached: float16 + int32
    for tau, k in ((1.0, 4), (2.0, 2)):
        want = kd_loss(s, t, ids, tau, k).item()
        got = topk_kd_loss(s, teacher, ids, tau, k).item()
        assert got == pytest.approx(want, rel=2e-3)  # float16 teacher values
        exact = topk_kd_loss(s, TopKTeacher(top.values, top.indices), ids, tau, k).item()
        assert exact == pytest.approx(want, rel=1e-5)


def test_topk_kd_renormalises_the_teacher_and_reads_the_full_student_softmax():
    """V=3, k=2. Teacher top-2 logits [ln3, 0] at ids [2, 0] -> p = [3/4, 1/4] (the third logit is
    gone); a uniform student has q = 1/3 everywhere, so KL = 3/4 ln(9/4) + 1/4 ln(3/4) (> 0 although
    the student's mass on the support is only 2/3). Position 1 is padding and must not count."""
    student = torch.tensor([[[0.0, 0.0, 0.0], [BIG, -BIG, 0.0]]])
    teacher = TopKTeacher(torch.tensor([[[LN3, 0.0], [0.0, 0.0]]]), torch.tensor([[[2, 0], [1, 2]]]))
    ids = torch.tensor([[2, -100]])
    want = 0.75 * math.log(9 / 4) + 0.25 * math.log(3 / 4)
    assert topk_kd_loss(student, teacher, ids, tau=1.0, k=4).item() == pytest.approx(want, abs=1e-6)
    # tau scales by tau^2 after softening both sides: p = softmax([ln3, 0] / 2), q = 1/3
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)
    want2 = (p0 * math.log(3 * p0) + (1 - p0) * math.log(3 * (1 - p0))) * 4
    assert topk_kd_loss(student, teacher, ids, tau=2.0, k=4).item() == pytest.approx(want2, abs=1e-6)
    # the student's own logit order does not matter, only its values at the teacher's ids
    shuffled = TopKTeacher(teacher.values[:, :, [1, 0]], teacher.indices[:, :, [1, 0]])
    assert topk_kd_loss(student, shuffled, ids, 1.0, 4).item() == pytest.approx(want, abs=1e-6)
    # and total_loss takes the cached form for w_kd (default kd_tau = 2)
    _, parts = total_loss(LossArgs(w_answer=0.0, w_first=0.0, w_kd=2.0), student, ids, teacher)
    assert parts == pytest.approx({"kd": 2.0 * want2}, abs=1e-5)


def test_total_loss_weights_and_parts():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g)
    teacher = torch.randn(2, 5, 11, generator=g)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, -100, -100, -100]])
    args = LossArgs(w_answer=2.0, w_first=0.5, w_ktoken=0.25, k_tokens=2, w_kd=0.1, kd_tau=3.0)
    total, parts = total_loss(args, logits, ids, teacher)
    want = {
        "answer": 2.0 * masked_ce(logits, ids).item(),
        "first": 0.5 * masked_ce(logits, ids, upto=1).item(),
        "ktoken": 0.25 * masked_ce(logits, ids, upto=2).item(),
        "kd": 0.1 * kd_loss(logits, teacher, ids, 3.0, 2).item(),
    }
    assert parts == pytest.approx(want, abs=1e-6) and set(parts) == set(want)
    assert total.item() == pytest.approx(sum(want.values()), abs=1e-5)
    # disabled parts are absent and cost nothing; the teacher is optional without KD
    total2, parts2 = total_loss(LossArgs(w_answer=1.0, w_first=0.0), logits, ids)
    assert set(parts2) == {"answer"} and total2.item() == pytest.approx(masked_ce(logits, ids).item())


def test_total_loss_is_differentiable():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    total, _ = total_loss(LossArgs(), logits, torch.tensor([[1, 2, -100]]))
    total.backward()
    assert logits.grad is not None and logits.grad[0, 2].abs().sum() == 0  # padding gets no gradient


def test_kd_without_teacher_raises():
    with pytest.raises(ValueError, match="teacher"):
        total_loss(LossArgs(w_kd=1.0), torch.zeros(1, 2, 3), torch.tensor([[0, 1]]))


def test_loss_args_validate():
    LossArgs().validate()
    with pytest.raises(ConfigError, match="^loss: k_tokens must be >= 1"):
        from_dict(LossArgs, {"k_tokens": 0}, where="loss")
    with pytest.raises(ConfigError, match="^loss: "):
        from_dict(LossArgs, {"kd_tau": 0.0}, where="loss")
