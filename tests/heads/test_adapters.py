"""Adapters: shapes, per-example RMS calibration, gradient flow, embedding RMS."""

import math

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.heads.adapters import ADAPTERS, AdapterArgs, build_adapter, embedding_rms

B, M, D_Z, D_MODEL = 3, 5, 16, 24


def z_batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.1, 1.0, 30.0]).view(B, 1, 1)  # very different input scales per example
    return torch.randn(B, M, D_Z, generator=g) * scales


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=(1, 2)).sqrt()  # (B,)


def test_registry():
    assert ADAPTERS.names() == ["linear", "linear2", "mlp"]


def test_markers_wrap_the_soft_tokens_outside_the_calibration():
    ad = build_adapter(AdapterArgs(kind="linear2", hidden=16, markers=True), D_Z, D_MODEL, 0.5)
    out = ad(z_batch())
    assert out.shape == (B, M + 2, D_MODEL)
    assert torch.equal(out[:, 0], ad.markers[0].expand(B, -1)) and torch.equal(
        out[:, -1], ad.markers[1].expand(B, -1)
    )
    torch.testing.assert_close(rms(out[:, 1:-1]), torch.full((B,), 0.5), rtol=1e-5, atol=0)
    out.sum().backward()
    assert ad.markers.grad is not None and ad.markers.grad.abs().sum() > 0


def test_linear2_is_two_linear_layers_without_activation():
    """ARC-Encoder's projector: a linear map of Z (scaling Z scales the output, before calibration)."""
    ad = build_adapter(AdapterArgs(kind="linear2", hidden=16, calibrate_rms=False), D_Z, D_MODEL, 1.0)
    assert [type(m).__name__ for m in ad.body.proj] == ["Linear", "Linear"]
    z, bias = z_batch(), ad(torch.zeros(1, 1, D_Z))
    torch.testing.assert_close(ad(3 * z) - bias, 3 * (ad(z) - bias), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "mlp", "linear2"])
@pytest.mark.parametrize("calibrate", [True, False])
def test_shape(kind, calibrate):
    ad = build_adapter(AdapterArgs(kind=kind, hidden=32, calibrate_rms=calibrate), D_Z, D_MODEL, 0.5)
    assert ad(z_batch()).shape == (B, M, D_MODEL)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_calibration_hits_target_rms_and_log_scale_moves_it(kind):
    torch.manual_seed(0)
    ad = build_adapter(AdapterArgs(kind=kind, hidden=32), D_Z, D_MODEL, target_rms=0.0123).eval()
    torch.testing.assert_close(rms(ad(z_batch())), torch.full((B,), 0.0123), rtol=1e-5, atol=0)
    with torch.no_grad():
        ad.log_scale.fill_(math.log(2.0))
    torch.testing.assert_close(rms(ad(z_batch())), torch.full((B,), 0.0246), rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_gradients_flow_through_calibration(kind):
    torch.manual_seed(0)
    ad = build_adapter(AdapterArgs(kind=kind, hidden=32), D_Z, D_MODEL, target_rms=1.0)
    z = z_batch().requires_grad_(True)
    out = ad(z)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in ad.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"
    assert z.grad.abs().sum() > 0


def test_uncalibrated_linear_is_bounded_and_has_no_log_scale():
    ad = build_adapter(AdapterArgs(kind="linear", tanh_scale=0.3, calibrate_rms=False), D_Z, D_MODEL, 1.0)
    assert ad(z_batch() * 100).abs().max() <= 0.3
    assert "log_scale" not in dict(ad.named_parameters())


def test_embedding_rms_by_hand():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])  # row RMS 3.5355, 0, 1
    want = (math.sqrt(12.5) + 0.0 + 1.0) / 3
    assert embedding_rms(w) == pytest.approx(want, rel=1e-6)
    assert embedding_rms(w, scale=2.0, chunk=2) == pytest.approx(2 * want, rel=1e-6)
    assert embedding_rms(w.bfloat16()) == pytest.approx(want, rel=1e-2)


def test_args_are_validated_strictly():
    assert from_dict(AdapterArgs, {"kind": "linear"}).kind == "linear"
    for bad in [{"kind": "conv"}, {"dropout": 1.5}, {"hidden": 0}, {"tanh_scale": 0}, {"hiden": 3}]:
        with pytest.raises(ConfigError):
            from_dict(AdapterArgs, bad)
    with pytest.raises(ValueError):
        build_adapter(AdapterArgs(), D_Z, D_MODEL, target_rms=0.0)
