"""One latent trajectory in the workflow's two training jobs (rules stage_a and stage_b): Stage A stops
at ``train.stage_a_end()`` and hands its whole state over, Stage B continues from it. Split or not,
the log, the best checkpoint and the final weights are the same, bit for bit, with dropout on; each
stage resumes from its own state after a kill; a handoff of other settings is refused.
"""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_runs import CPU, TRAIN_DF, VAL_DF, assert_same_weights, make_run, one_thread, two_receivers

import latentwire.training.loop as train_mod
from latentwire.cli.main import main
from latentwire.config import ConfigError, to_dict
from latentwire.data.prepare import write_splits
from latentwire.encoders import EncoderArgs
from latentwire.models import load_registry, materialize
from latentwire.models.tiny import save_tiny
from latentwire.training.loop import train

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
lms = pytest.fixture(scope="module")(two_receivers)


def staged_run(lms, **train):
    """select on the first receiver (A0 trains its scorer), adapter dropout on (RNG matters): steps
    1-2 are A0, 3 is A, 4-6 are B; validated every 2 steps (one validation inside Stage A)."""
    cfg = {"steps": 6, "encoder_warmup_steps": 2, "stage_a_steps": 3, "eval_every": 2}
    run = make_run(**{**cfg, "warmup_steps": 2, "val_examples": 2, "batch_size": 2, **train})
    run.latent.n_shared, run.latent.n_private = 6, 0
    run.latent.encoder = EncoderArgs(name="select", d_z=32, n_heads=4, source_model=lms[0].spec.name)
    run.latent.adapter.dropout = 0.2
    return run


def outputs(out_dir) -> tuple[list[dict], dict, dict]:
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    summary = json.loads((out_dir / "train_summary.json").read_text())
    return log, load_file(str(out_dir / "best.safetensors")), summary


def final_weights(summary: dict) -> dict:
    return torch.load(summary["state"], weights_only=True)["weights"]


def split(lms, run, root, monkeypatch=None, kill_b_at: int = 0) -> dict:
    """Stage A then Stage B as the two workflow jobs run them (own outputs, own state folders);
    ``kill_b_at``: Stage B first dies in its n-th receiver step, then reruns. ``b_steps``: the steps
    the (re)run of Stage B trained."""
    a_out, b_out = root / "stage_a", root / "stage_b"
    handoff = a_out / "state.pt"
    stage_a = {"state_dir": root / "state-a", "stop_at": run.train.stage_a_end(), "handoff": handoff}
    a = train(lms, run, TRAIN_DF, VAL_DF, a_out, CPU, **stage_a)
    stage_b = {"state_dir": root / "state-b", "init_state": handoff}
    real, calls = train_mod.train_step, []
    with pytest.MonkeyPatch.context() as m:
        if kill_b_at:
            m.setattr(train_mod, "train_step", _dying(real, kill_b_at))
            with pytest.raises(KeyboardInterrupt):
                train(lms, run, TRAIN_DF, VAL_DF, b_out, CPU, **stage_b)
        m.setattr(train_mod, "train_step", lambda *x, **k: calls.append(1) or real(*x, **k))
        b = train(lms, run, TRAIN_DF, VAL_DF, b_out, CPU, **stage_b)
    return {"a": a, "b": b, "a_out": a_out, "b_out": b_out, "b_steps": len(calls)}


def _dying(real, n: int):
    """train_step that dies (as kill -9 would) at its n-th call."""
    seen = []

    def step(*args, **kw):
        seen.append(1)
        if len(seen) == n:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    return step


@pytest.fixture(scope="module")
def one_go(lms, tmp_path_factory):
    run = staged_run(lms)
    out = tmp_path_factory.mktemp("one-go")
    train(lms, run, TRAIN_DF, VAL_DF, out, CPU)
    return outputs(out)


def assert_same_run(staged: dict, one_go) -> None:
    log, best, summary = outputs(staged["b_out"])
    ref_log, ref_best, ref_summary = one_go
    assert [r["stage"] for r in log] == ["A0", "A0", "A", "B", "B", "B"]
    assert log == ref_log  # same losses, learning rates and validations, step by step
    assert_same_weights(best, ref_best)
    assert_same_weights(final_weights(summary), final_weights(ref_summary))
    assert (summary["steps"], summary["best"], summary["stopped"]) == (6, ref_summary["best"], "completed")


def test_stage_a_then_stage_b_is_the_one_go_run_bit_for_bit(lms, one_go, tmp_path):
    staged = split(lms, staged_run(lms), tmp_path)
    a_log, _, a_summary = outputs(staged["a_out"])
    assert [r["stage"] for r in a_log] == ["A0", "A0", "A"] and a_summary["stop_at"] == 3
    handoff = torch.load(staged["a_out"] / "state.pt", weights_only=True)
    assert handoff["step"] == 3 and handoff["train_steps"] == 6  # the schedule of all 6 steps
    assert_same_run(staged, one_go)


def test_stage_b_trains_only_the_steps_after_stage_a(lms, tmp_path):
    assert split(lms, staged_run(lms), tmp_path)["b_steps"] == 3


def test_a_killed_stage_b_resumes_from_its_own_state_not_the_handoff(lms, one_go, tmp_path):
    """Killed in its 3rd step (step 6; its own first checkpoint: step 4): the rerun trains 5 and 6."""
    staged = split(lms, staged_run(lms), tmp_path, kill_b_at=3)
    assert staged["b_steps"] == 2 and staged["b"]["state"].startswith(str(tmp_path / "state-b"))
    assert_same_run(staged, one_go)


def test_a_killed_stage_a_resumes_from_its_own_state(lms, one_go, tmp_path):
    """Killed in step 3 (its first checkpoint: step 2): the rerun of Stage A trains step 3 only."""
    run, calls = staged_run(lms), []
    stage_a = {"state_dir": tmp_path / "state-a", "stop_at": 3, "handoff": tmp_path / "stage_a" / "state.pt"}
    real = train_mod.train_step
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_mod, "train_step", _dying(real, 1))  # step 3: Stage A's first receiver step
        with pytest.raises(KeyboardInterrupt):
            train(lms, run, TRAIN_DF, VAL_DF, tmp_path / "stage_a", CPU, **stage_a)
        assert not stage_a["handoff"].exists()
        m.setattr(train_mod, "train_step", lambda *x, **k: calls.append(1) or real(*x, **k))
        train(lms, run, TRAIN_DF, VAL_DF, tmp_path / "stage_a", CPU, **stage_a)
    assert len(calls) == 1
    b_out = tmp_path / "stage_b"
    train(
        lms, run, TRAIN_DF, VAL_DF, b_out, CPU, state_dir=tmp_path / "state-b", init_state=stage_a["handoff"]
    )
    assert_same_run({"b_out": b_out}, one_go)


def test_a_stage_a_of_zero_steps_hands_over_the_initial_state(lms, tmp_path):
    run = staged_run(lms, encoder_warmup_steps=0, stage_a_steps=0, steps=3)
    ref = tmp_path / "one-go"
    train(lms, run, TRAIN_DF, VAL_DF, ref, CPU)
    staged = split(lms, run, tmp_path / "split")
    assert staged["a"]["steps"] == 0 and "initial state" in staged["a"]["note"]
    assert staged["a"]["state"] is None  # no resumable state was written; the handoff is the state
    assert torch.load(staged["a_out"] / "state.pt", weights_only=True)["step"] == 0
    log, best, summary = outputs(staged["b_out"])
    ref_log, ref_best, ref_summary = outputs(ref)
    assert log == ref_log and [r["stage"] for r in log] == ["B", "B", "B"]
    assert_same_weights(best, ref_best)
    assert_same_weights(final_weights(summary), final_weights(ref_summary))


def test_a_handoff_of_other_settings_is_refused(lms, tmp_path):
    run = staged_run(lms, steps=3, stage_a_steps=0)
    handoff = tmp_path / "stage_a" / "state.pt"
    train(
        lms,
        run,
        TRAIN_DF,
        VAL_DF,
        tmp_path / "stage_a",
        CPU,
        state_dir=tmp_path / "sa",
        stop_at=2,
        handoff=handoff,
    )
    other = staged_run(lms, steps=3, stage_a_steps=0, lr=1e-2)
    with pytest.raises(ConfigError, match="key"):
        train(
            lms,
            other,
            TRAIN_DF,
            VAL_DF,
            tmp_path / "stage_b",
            CPU,
            state_dir=tmp_path / "sb",
            init_state=handoff,
        )


def test_a_stage_b_state_of_another_schedule_falls_back_to_the_handoff(lms, one_go, tmp_path):
    """After a run of 8 steps, 6 steps (same key: train.steps is outside it) find Stage B's own state
    at step 8, which this schedule does not continue: Stage B starts from the new handoff (step 3),
    not from step 0."""
    split(lms, staged_run(lms, steps=8), tmp_path)
    staged = split(lms, staged_run(lms), tmp_path)
    assert staged["b_steps"] == 3
    assert_same_run(staged, one_go)


def test_the_cli_split_into_stage_a_and_b_writes_the_one_go_checkpoint(tmp_path):
    """What the rules run: ``train-latent --stage a`` then ``--stage b --init-state``, against one
    ``train-latent`` (``--stage all``) on the same tiny registry models, data and settings."""
    entries, manifests = {}, {}
    for family in ("llama", "qwen2"):
        path = str(save_tiny(family, tmp_path / family))
        entries[f"tiny-{family}"] = {"family": family, "source": {"kind": "local", "path": path}}
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": entries}))
    for name, spec in load_registry(registry).items():
        materialize(spec, tmp_path / "cache" / name)
        manifests[name] = str(tmp_path / "cache" / name / "manifest.json")
    data = write_splits({"train": TRAIN_DF, "validation": VAL_DF, "test": VAL_DF}, tmp_path / "data", {})
    run = make_run(steps=4, stage_a_steps=2, eval_every=2, val_examples=2, batch_size=2, warmup_steps=1)
    run.latent.adapter.dropout = 0.2
    common = ["--registry", str(registry), "--models", *manifests, "--manifests", *manifests.values()]
    common += ["--config-json", json.dumps(to_dict(run)), "--exp", "e", "--encoder-manifest", ""]
    common += ["--train", str(data[0]), "--validation", str(data[1])]

    def cli(out: str, *stage: str) -> None:
        assert main(["train-latent", *common, "--out-dir", str(tmp_path / out), *stage]) == 0

    cli("one-go")
    cli("stage_a", "--stage", "a")
    cli("stage_b", "--stage", "b", "--init-state", str(tmp_path / "stage_a" / "state.pt"))
    log, best, summary = outputs(tmp_path / "stage_b")
    ref_log, ref_best, ref_summary = outputs(tmp_path / "one-go")
    assert [r["stage"] for r in log] == ["A", "A", "B", "B"] and log == ref_log
    assert_same_weights(best, ref_best)
    assert_same_weights(final_weights(summary), final_weights(ref_summary))
    assert outputs(tmp_path / "stage_a")[2]["stop_at"] == 2
    for bad in (["--stage", "b"], ["--stage", "a", "--init-state", "x"]):  # --init-state: b only
        assert main(["train-latent", *common, "--out-dir", str(tmp_path / "bad"), *bad]) != 0
