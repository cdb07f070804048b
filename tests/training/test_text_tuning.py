"""Tuned text ceilings: LoRA on a tiny receiver trained on text prompts, checkpointed, rebuilt for eval."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from latentwire.cli.main import main
from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.heads.lora import LoraArgs, load_lora_state_dict, lora_state_dict
from latentwire.training.args import TrainArgs
from latentwire.training.text_tuning import TunedArgs, tune, tuned_step

ROWS = [
    {
        "id": f"q{i}",
        "question": f"What colour is item {i}?",
        "context": f"Item {i} is painted {c}. Other items are grey.",
        "answers": [c],
        "title": f"art{i % 3}",
        "split": "train",
        "dataset": "toy",
    }
    for i, c in enumerate(["red", "blue", "green", "black", "white", "pink", "gold", "teal"])
]


def _args(steps=6) -> TunedArgs:
    train = TrainArgs(steps=steps, batch_size=4, lr=5e-3, warmup_steps=1, eval_every=3, val_examples=4)
    return TunedArgs(kind="text", lora=LoraArgs(rank=4, first_layers=1), train=train)


def test_tuned_args_validate():
    with pytest.raises(ConfigError, match="kind"):
        from_dict(TunedArgs, {"kind": "oracle-8"}, where="tuned")
    with pytest.raises(ConfigError, match="rank"):
        from_dict(TunedArgs, {"lora": {"rank": 0}}, where="tuned")
    with pytest.raises(ConfigError, match="KD"):
        from_dict(TunedArgs, {"loss": {"w_kd": 1.0}}, where="tuned")


@pytest.fixture
def fresh_lm(tiny_spec, tmp_path):
    """A tiny receiver of its own: LoRA is injected in place, so the shared fixture stays clean."""
    from latentwire.models import load_model, materialize

    materialize(tiny_spec, tmp_path / "cache")
    return load_model(tiny_spec, tmp_path / "cache" / "manifest.json", device="cpu")


def test_tuning_lowers_the_loss_trains_only_lora_and_round_trips(fresh_lm, tmp_path):
    lm, args = fresh_lm, _args()
    df = pd.DataFrame(ROWS)
    base = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    maker = text_prompt_maker(lm, args.prompt, "text")
    summary = tune(lm, args, df, df, tmp_path / "run")
    assert summary["steps"] == 6 and summary["trainable_parameters"] > 0 and summary["best"]["step"] in (3, 6)
    logs = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, 7))
    assert logs[-1]["loss"] < logs[0]["loss"]
    for n, p in lm.model.named_parameters():  # frozen weights untouched; only LoRA tensors moved
        if "lora_" not in n:
            assert torch.equal(p, base[n.replace(".base_layer", "")]), n  # PEFT renames wrapped weights
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    assert set(best) == set(lora_state_dict(lm.model))
    load_lora_state_dict(lm.model, best)  # round trip: the same loss from the saved tensors
    with torch.no_grad():
        a, _ = tuned_step(lm, args, maker, ROWS[:4])
        load_lora_state_dict(lm.model, load_file(str(tmp_path / "run" / "best.safetensors")))
        b, _ = tuned_step(lm, args, maker, ROWS[:4])
    assert float(a) == float(b)


def test_cli_trains_and_evaluates_a_tuned_ceiling(tiny_spec, tmp_path):
    from latentwire.models import materialize

    materialize(tiny_spec, tmp_path / "cache")
    registry = tmp_path / "models.yaml"
    registry.write_text(
        "models:\n  "
        + tiny_spec.name
        + ":\n    family: x\n    source: {kind: local, path: "
        + str(tiny_spec.source.path)
        + "}\n    context_limit: 1024\n"
    )
    data = tmp_path / "split.parquet"
    pd.DataFrame(ROWS).to_parquet(data)
    cfg = json.dumps(to_dict(_args(steps=3)) | {"eval": {"n_examples": 0, "batch_size": 4, "device": "cpu"}})
    common = ["--registry", str(registry), "--model", tiny_spec.name, "--manifest",
              str(tmp_path / "cache" / "manifest.json"), "--config-json", cfg]  # fmt: skip
    assert main(["tune-text", *common, "--train", str(data), "--validation", str(data),
                 "--out-dir", str(tmp_path / "t")]) == 0  # fmt: skip
    assert main(["eval-tuned", *common, "--checkpoint", str(tmp_path / "t" / "best.safetensors"),
                 "--data", str(data), "--predictions", str(tmp_path / "p.jsonl"),
                 "--metrics", str(tmp_path / "m.json")]) == 0  # fmt: skip
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["system"] == "text-tuned-s0" and m["kind"] == "tuned" and m["n"] == len(ROWS)
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert {r["title"] for r in rows} == {"art0", "art1", "art2"}  # the bootstrap's clusters


# --- resume (issue 16): the tune_text job keeps its state outside its outputs, like stage_a / stage_b --

OUTPUTS = ("best.safetensors", "train_log.jsonl", "train_summary.json")


def _reload(tiny_spec, tmp_path):
    """The receiver as a rerun (a new process) loads it: without the LoRA of an earlier call."""
    from latentwire.models import load_model

    return load_model(tiny_spec, tmp_path / "cache" / "manifest.json", device="cpu")


def _count_steps(monkeypatch, die_at: int = 0) -> list:
    import latentwire.training.text_tuning as tt

    real, calls = tt.tuned_step, []

    def counted(*a, **k):
        calls.append(1)
        if len(calls) == die_at:
            raise KeyboardInterrupt("killed")  # as kill -9 would: nothing cleaned up
        return real(*a, **k)

    monkeypatch.setattr(tt, "tuned_step", counted)
    return calls


def _log(folder):
    return [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]


def test_a_killed_tuning_resumes_exactly_and_a_changed_setting_starts_afresh(
    fresh_lm, tiny_spec, tmp_path, monkeypatch
):
    """Killed in step 5 (last checkpoint: the validation at step 3): no output exists yet, the rerun
    runs steps 4..6 only and ends with the uninterrupted run's log and best LoRA; another loss weight
    is another run identity and trains all 6 steps."""
    args, df = _args(), pd.DataFrame(ROWS)
    ref = tune(fresh_lm, args, df, df, tmp_path / "ref")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _count_steps(m, die_at=5)
        with pytest.raises(KeyboardInterrupt):
            tune(_reload(tiny_spec, tmp_path), args, df, df, run)
    assert not any((run / name).exists() for name in OUTPUTS)
    assert torch.load(next(run.glob(".state/*/checkpoint.pt")), weights_only=True)["step"] == 3
    calls = _count_steps(monkeypatch)
    summary = tune(_reload(tiny_spec, tmp_path), args, df, df, run)
    assert len(calls) == 3 and summary["best"] == ref["best"]
    assert [r["step"] for r in _log(run)] == list(range(1, 7)) and _log(run) == _log(tmp_path / "ref")
    best, want = (
        load_file(str(run / "best.safetensors")),
        load_file(str(tmp_path / "ref" / "best.safetensors")),
    )
    assert set(best) == set(want) and all(torch.equal(best[k], want[k]) for k in want)
    calls.clear()
    args.loss.w_first += 1.0
    other = tune(_reload(tiny_spec, tmp_path), args, df, df, run)
    assert len(calls) == 6 and other["state"] != summary["state"]


def test_a_non_finite_step_is_skipped_and_too_many_stop_the_run(fresh_lm, tmp_path, monkeypatch):
    import latentwire.training.nonfinite as nonfinite
    import latentwire.training.text_tuning as tt

    real, calls = tt.tuned_step, []

    def poisoned(lm, args, maker, batch):  # step 2 returns a NaN loss (and so NaN gradients)
        loss, rec = real(lm, args, maker, batch)
        calls.append(1)
        if len(calls) == 2:
            loss = loss * float("nan")
            rec["loss"] = float("nan")
        return loss, rec

    monkeypatch.setattr(tt, "tuned_step", poisoned)
    df = pd.DataFrame(ROWS)
    summary = tune(fresh_lm, _args(), df, df, tmp_path / "run")
    assert summary["skipped_nonfinite_steps"] == [2]
    assert all(torch.isfinite(p).all() for n, p in fresh_lm.model.named_parameters() if "lora_" in n)
    assert summary["best"]["f1"] >= 0

    def always_nan(*a):
        loss, rec = real(*a)
        return loss * float("nan"), {**rec, "loss": float("nan")}

    monkeypatch.setattr(tt, "tuned_step", always_nan)
    monkeypatch.setattr(nonfinite, "max_skipped", lambda steps: 2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        tune(fresh_lm, _args(), df, df, tmp_path / "run2")
