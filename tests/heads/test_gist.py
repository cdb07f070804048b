"""The gist reconstruction loss on hand-made tensors, and the head's shapes."""

import pytest
import torch

from latentwire.heads.gist import GistHead, gist_loss


def test_gist_loss_by_hand():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 2.0], [9.0, 9.0]]])  # (B=2, T=2, d=2)
    target = torch.tensor([[[2.0, 2.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])  # the (1, 1) entry is padding: never counted
    # target / scale 2: [[1,1],[1,0]] and zeros; squared errors per token: 0, 0.5, 2.0
    assert gist_loss(pred, target, mask, scale=2.0).item() == pytest.approx((0 + 0.5 + 2.0) / 3)


def test_gist_head_shapes_and_truncation():
    head = GistHead(d_z=8, d_model=12, max_tokens=5, n_heads=2)
    z = torch.randn(3, 4, 8)
    assert head(z, 2).shape == (3, 2, 12)
    assert head(z, 50).shape == (3, 5, 12)  # never more than max_tokens
