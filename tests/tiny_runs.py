"""Two tiny receivers and a small latent run, shared by the latent training tests.

The receivers are the tiny Llama- and Qwen2-shaped models under registry names with dots (module
keys replace them); the run uses small dims, no dropout (determinism) and a bare prompt, on a
"capital of" frame (:mod:`toy_data`): train on 8 countries, validate on 8 others.
"""

from __future__ import annotations

import torch
from toy_data import capital_frame

from latentwire.config import from_dict
from latentwire.latent.build import build_interlingua
from latentwire.models import LoadedModel, load_model, materialize
from latentwire.models.tiny import save_tiny
from latentwire.training.args import LatentRunArgs
from latentwire.training.step import train_step

CPU = torch.device("cpu")


CAPITALS = [
    ("Paris", "France"),
    ("Rome", "Italy"),
    ("Berlin", "Germany"),
    ("Madrid", "Spain"),
    ("Lisbon", "Portugal"),
    ("Vienna", "Austria"),
    ("Prague", "Czechia"),
    ("Warsaw", "Poland"),
    ("Oslo", "Norway"),
    ("Dublin", "Ireland"),
    ("Athens", "Greece"),
    ("Bern", "Switzerland"),
    ("Riga", "Latvia"),
    ("Sofia", "Bulgaria"),
    ("Kyiv", "Ukraine"),
    ("Minsk", "Belarus"),
]


TRAIN_DF = capital_frame("train", CAPITALS[:8], 0, city_alias=True)


VAL_DF = capital_frame("validation", CAPITALS[8:], 8, city_alias=True)


def make_run(**train) -> LatentRunArgs:
    """Small dims, no dropout (determinism), and a bare prompt so the soft tokens are most of it."""
    cfg = {
        "latent": {
            "n_shared": 8,
            "n_private": 4,
            "encoder": {"name": "byte", "d_z": 32, "n_heads": 4, "n_layers": 1, "max_bytes": 256},
            "adapter": {"kind": "mlp", "hidden": 64, "dropout": 0.0},
        },
        "prompt": {"system_prompt": "", "user_template": "{content}", "answer_prefix": ""},
        "train": {
            "batch_size": 4,
            "lr": 3e-3,
            "warmup_steps": 3,
            "val_examples": 8,
            "log_every": 1000,
            "collapse_after": 1000,
            **train,
        },
        "eval": {"batch_size": 8, "max_new_tokens": 4},
    }
    return from_dict(LatentRunArgs, cfg, where="latent")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def sgd_step(lms, run: LatentRunArgs, batch: list[dict], seed: int = 0, **kw):
    """One train_step from a fresh interlingua (same seed) with plain SGD, lr 1: the update is the
    (clipped) gradient itself, so gradients compare through parameters. (Adam's first step is about
    ±lr * sign(g), which would blow float-level differences up to full steps.)"""
    torch.manual_seed(seed)
    il = build_interlingua(run.latent, lms, CPU)
    params = il.trainable_parameters()
    before = [p.detach().clone() for p in params]
    record = train_step(lms, il, run, batch, params, torch.optim.SGD(params, lr=1.0), **kw)
    return record, [p.detach() - b for p, b in zip(params, before)], il


def assert_close_updates(a: list, b: list, **tol) -> None:
    assert len(a) == len(b) and any(x.abs().sum() > 0 for x in a)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


def two_receivers(make_local_spec, tmp_path_factory) -> list[LoadedModel]:
    """Both tiny receivers at once, under registry names with dots (module keys replace them). A
    module's fixture: ``lms = pytest.fixture(scope="module")(two_receivers)``."""
    out = []
    for family, name in (("llama", "tiny-llama3.2"), ("qwen2", "tiny-qwen2.5")):
        root = tmp_path_factory.mktemp(f"train-{family}")
        spec = make_local_spec(name, save_tiny(family, root / "model"), context_limit=1024)
        materialize(spec, root / "cache")
        out.append(load_model(spec, root / "cache" / "manifest.json", device="cpu"))
    return out


def one_thread():
    """Tiny models on a shared 2-core CPU: one intra-op thread is several times faster (no spinning).
    A module's autouse fixture: ``single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
