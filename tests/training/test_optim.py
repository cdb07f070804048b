"""Optimizer groups: the encoder at lr, every reading head at lr × head_lr_scale, nothing twice."""

import pytest
import torch

from latentwire.config import ConfigError, FieldError
from latentwire.encoders import EncoderArgs
from latentwire.heads.adapters import AdapterArgs
from latentwire.latent.interlingua import Interlingua, LatentArgs
from latentwire.training.args import TrainArgs
from latentwire.training.optim import make_optimizer, param_groups
from latentwire.training.pretrain import PretrainArgs
from latentwire.training.text_tuning import stage_b_schedule


def interlingua() -> Interlingua:
    torch.manual_seed(0)
    args = LatentArgs(
        n_shared=2,
        n_private=1,
        encoder=EncoderArgs(name="byte", d_z=8, n_heads=2, n_layers=1, max_bytes=64),
        adapter=AdapterArgs(kind="mlp", hidden=16, dropout=0.0),
    )
    return Interlingua(args, {"a": (12, 1.0), "b": (20, 1.0)})


def test_groups_split_encoder_from_heads_and_cover_every_trainable_tensor_once():
    il = interlingua()
    enc, heads = param_groups(il, lr=1e-4, head_lr_scale=10.0)
    assert (enc["name"], enc["lr"]) == ("encoder", 1e-4)
    assert heads["name"] == "heads" and heads["lr"] == pytest.approx(1e-3)
    ids = [id(p) for g in (enc, heads) for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in il.trainable_parameters())  # all, none twice
    assert {id(p) for p in il.encoder.parameters()} >= {id(p) for p in enc["params"]}
    assert {id(p) for p in il.adapters.parameters()} == {id(p) for p in heads["params"]}


def test_schedule_keeps_the_ratio_and_the_heads_move_faster():
    il = interlingua()
    opt = make_optimizer(il, lr=1e-3, weight_decay=0.0, head_lr_scale=5.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    for _ in range(3):
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] / lrs[0] == pytest.approx(5.0) and lrs[0] == pytest.approx(1e-3 / 8)


def test_a_frozen_encoder_leaves_only_the_heads_group():
    il = interlingua()
    for p in il.encoder.parameters():
        p.requires_grad_(False)
    assert [g["name"] for g in param_groups(il, 1e-3, 2.0)] == ["heads"]


def test_scale_is_validated_and_reaches_the_tuned_ceiling():
    with pytest.raises(FieldError, match="head_lr_scale"):
        TrainArgs(head_lr_scale=0.0).validate()
    with pytest.raises(ConfigError, match="head_lr_scale"):
        PretrainArgs(head_lr_scale=-1.0).validate()
    # the text ceiling's LoRA trains at the rate of the latent's reading heads
    assert stage_b_schedule(TrainArgs(lr=1e-4, head_lr_scale=10.0), seed=1).lr == pytest.approx(1e-3)
