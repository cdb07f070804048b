"""The latent training loop on two tiny receivers (Llama- and Qwen2-shaped): Stage A then B, loss going
down, checkpoints that reproduce validation exactly, exact resume, the collapse detector, the best
checkpoint, micro-batches and logged gradient norms per step, the Stage A0 encoder warm-up and Stage B
on a subset of receivers. One step's mechanics: ``test_step.py``.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import CPU, TRAIN_DF, VAL_DF, assert_same_weights, make_run, one_thread, two_receivers

import latentwire.training.checkpoint as checkpoint_mod
import latentwire.training.loop as train_mod
import latentwire.training.step as step_mod
from latentwire.config import ConfigError, from_dict
from latentwire.encoders import EncoderArgs
from latentwire.evaluation.evaluate import EvalArgs, model_view, select_examples
from latentwire.latent.build import build_interlingua
from latentwire.prompt import content_text
from latentwire.training.args import LatentRunArgs
from latentwire.training.loop import train, validate

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
lms = pytest.fixture(scope="module")(two_receivers)  # the two tiny receivers, built once per module


def read_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def read_weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# --- (1) gradient routing ---------------------------------------------------------------------


def test_stage_a_steps_are_logged_then_stage_b_follows(lms, tmp_path):
    run = make_run(steps=3, stage_a_steps=2, eval_every=3, val_examples=2, batch_size=2)
    train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    log = read_log(tmp_path)
    assert [r["stage"] for r in log] == ["A", "A", "B"]
    assert set(log[0][lms[0].spec.name]) == {"loss", "first", "align", "first_acc"}
    assert "answer" in log[2][lms[0].spec.name]


# --- (2) + (3) a short real run ---------------------------------------------------------------


def val_rows(run: LatentRunArgs) -> list[dict]:
    """The validation examples train() picks."""
    return select_examples(VAL_DF, EvalArgs(n_examples=run.train.val_examples, seed=run.train.seed))


@pytest.fixture(scope="module")
def short_run(lms, tmp_path_factory):
    """30 steps, validated once at the end; the receivers' weights are snapshotted before, and the
    untrained interlingua train() starts from (same seed) is validated too."""
    before = [{k: v.clone() for k, v in lm.model.state_dict().items()} for lm in lms]
    run = make_run(steps=30, eval_every=30)
    torch.manual_seed(run.train.seed)
    val0 = validate(lms, build_interlingua(run.latent, lms, CPU), run, val_rows(run))
    out = tmp_path_factory.mktemp("short-run")
    summary = train(lms, run, TRAIN_DF, VAL_DF, out, CPU)
    return run, out, summary, before, val0


def test_short_run_lowers_the_loss(lms, short_run):
    run, out, summary, before, val0 = short_run
    assert summary["stopped"] == "completed" and summary["steps"] == 30
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 31))
    for lm in lms:
        losses = [r[lm.spec.name]["loss"] for r in log]
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < first - 0.05, (lm.spec.name, first, last)
    assert all(r["grad_norm"] > 0 and -1 <= r["z_cosine"] <= 1 for r in log)
    val = log[-1]["val"]
    assert summary["best"] == {"mean_f1": val["mean_f1"], "step": 30}
    n_val = len(val_rows(run))
    for lm in lms:  # the collapse detector's input: a share of distinct predictions among n_val
        ratio = val[lm.spec.name]["unique_prediction_ratio"]
        assert 0 < ratio <= 1 and (ratio * n_val) == pytest.approx(round(ratio * n_val))
    # Validation reads each example's own Z: from the untrained interlingua, the Qwen2 receiver's
    # predictions already differ between examples. (The tied-embedding tiny Llama echoes the last
    # scaffold token whatever Z is. After training, tiny random receivers mostly predict one
    # learned constant, so diversity after 30 steps is not something this setup can promise.)
    assert val0["tiny-qwen2.5"]["unique_prediction_ratio"] * n_val > 1
    # the frozen receivers were not touched
    for lm, sd in zip(lms, before):
        assert all(p.grad is None for p in lm.model.parameters())
        for k, v in lm.model.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_best_checkpoint_reproduces_validation_exactly(lms, short_run):
    run, out, summary, _, _ = short_run
    best = read_weights(out / "best.safetensors")
    assert_same_weights(best, state_weights(summary))  # only validated at step 30
    rebuilt = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        il = build_interlingua(run.latent, lms, CPU)
        il.load_trainable_state_dict(best)
        rebuilt.append(il.eval())
    texts = [content_text(model_view(e), run.prompt) for e in val_rows(run)]
    with torch.no_grad():
        z0, z1 = rebuilt[0].encode(texts), rebuilt[1].encode(texts)
        assert torch.equal(z0, z1)
        for lm in lms:
            assert torch.equal(
                rebuilt[0].soft_tokens(z0, lm.spec.name), rebuilt[1].soft_tokens(z1, lm.spec.name)
            )
    # the rebuilt model scores validation exactly as the trained one did at step 30
    assert validate(lms, rebuilt[0], run, val_rows(run)) == read_log(out)[-1]["val"]


# --- (4) resume ----------------------------------------------------------------------------------

# warmup longer than the run: the learning-rate schedule of steps 1..6 does not depend on the total

RESUME = {"eval_every": 2, "warmup_steps": 10, "val_examples": 2, "batch_size": 2}

OUTPUTS = ("best.safetensors", "train_log.jsonl", "train_summary.json")


def resume_run(steps: int, dropout: float = 0.2, **train) -> LatentRunArgs:
    """The resume tests' run: adapter dropout on, so an exact resume needs the saved RNG state."""
    run = make_run(steps=steps, **{**RESUME, **train})
    run.latent.adapter.dropout = dropout
    return run


def state_weights(summary: dict) -> dict[str, torch.Tensor]:
    """The trainable weights of the run's checkpoint (its state file, outside the outputs)."""
    return torch.load(summary["state"], weights_only=True)["weights"]


def _count_steps(monkeypatch) -> list:
    calls = []
    real = step_mod._step_loss

    def counting(lm, *args):
        calls.append(lm.spec.name)
        return real(lm, *args)

    monkeypatch.setattr(step_mod, "_step_loss", counting)
    return calls


def _kill_at(monkeypatch, step: int) -> None:
    """Make training die (as kill -9 would, nothing cleaned up) when it starts ``step``."""
    real = train_mod.train_step
    seen = []

    def dying(*args, **kw):
        seen.append(1)
        if len(seen) == step:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(train_mod, "train_step", dying)


@pytest.fixture(scope="module")
def uninterrupted(lms, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-ref")
    summary = train(lms, resume_run(6), TRAIN_DF, VAL_DF, out, CPU)
    return out, summary


def test_resume_continues_a_finished_shorter_run_exactly(lms, uninterrupted, tmp_path, monkeypatch):
    ref_out, ref_summary = uninterrupted
    out = tmp_path / "run"
    first = train(lms, resume_run(4), TRAIN_DF, VAL_DF, out, CPU)
    assert first["steps"] == 4 and torch.load(first["state"], weights_only=True)["step"] == 4
    calls = _count_steps(monkeypatch)
    second = train(lms, resume_run(6), TRAIN_DF, VAL_DF, out, CPU)
    assert len(calls) == 2 * len(lms)  # only steps 5 and 6 ran
    assert second["steps"] == 6 and second["best"] == ref_summary["best"]
    assert second["state"] == first["state"]
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log == read_log(ref_out)  # same losses, learning rates and validations, step by step
    assert_same_weights(state_weights(second), state_weights(ref_summary))
    assert_same_weights(read_weights(out / "best.safetensors"), read_weights(ref_out / "best.safetensors"))


@pytest.mark.parametrize("delete_outputs", [False, True], ids=["outputs-kept", "outputs-deleted"])
def test_a_kill_after_the_first_checkpoint_resumes_bit_exactly_with_dropout(
    lms, uninterrupted, tmp_path, monkeypatch, delete_outputs
):
    """Killed in step 3 (first checkpoint: step 2); Snakemake then deletes the declared outputs.
    The rerun resumes from the state folder, redoes steps 3..6 only, and writes every output whole:
    the log 1..6, the weights and the best checkpoint equal an uninterrupted run's, with dropout."""
    ref_out, ref_summary = uninterrupted
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train(lms, resume_run(6), TRAIN_DF, VAL_DF, out, CPU)
    assert not any((out / name).exists() for name in OUTPUTS)  # outputs only at the end
    if delete_outputs:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    calls = _count_steps(monkeypatch)
    summary = train(lms, resume_run(6), TRAIN_DF, VAL_DF, out, CPU)
    assert summary["steps"] == 6 and len(calls) == 4 * len(lms)
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]
    assert read_log(out) == read_log(ref_out)
    assert_same_weights(state_weights(summary), state_weights(ref_summary))
    assert_same_weights(read_weights(out / "best.safetensors"), read_weights(ref_out / "best.safetensors"))
    # a finished state rewrites deleted outputs without training again
    for name in OUTPUTS:
        (out / name).unlink()
    calls.clear()
    assert train(lms, resume_run(6), TRAIN_DF, VAL_DF, out, CPU)["steps"] == 6 and not calls
    assert read_log(out) == read_log(ref_out) and all((out / n).is_file() for n in OUTPUTS)


def test_without_the_saved_rng_state_a_resume_with_dropout_would_differ(
    lms, uninterrupted, tmp_path, monkeypatch
):
    """The bit-exact test above can tell: skipping the RNG restore changes the steps after the kill."""
    ref_out, _ = uninterrupted
    with monkeypatch.context() as m:
        _kill_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train(lms, resume_run(6), TRAIN_DF, VAL_DF, tmp_path, CPU)
    torch.manual_seed(123)  # whatever state the process happens to be in
    monkeypatch.setattr(checkpoint_mod, "restore_rng", lambda state: None)
    train(lms, resume_run(6), TRAIN_DF, VAL_DF, tmp_path, CPU)
    ours, ref = read_log(tmp_path), read_log(ref_out)
    assert ours[:2] == ref[:2] and ours[2:] != ref[2:]


@pytest.mark.parametrize(
    "change",
    [
        lambda run: setattr(run.loss, "w_first", run.loss.w_first + 1.0),
        lambda run: setattr(run.latent.adapter, "hidden", 48),
        lambda run: setattr(run.train, "lr", 1e-2),
        lambda run: setattr(run.eval, "max_new_tokens", 3),
    ],
    ids=["loss.w_first", "adapter.hidden-reshapes-weights", "train.lr", "eval.max_new_tokens"],
)
def test_a_changed_setting_after_a_finished_run_starts_afresh(lms, tmp_path, monkeypatch, change):
    """Not a 0-step 'resume' and not a state-dict shape crash: another run identity, another state."""
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    first = train(lms, resume_run(4), TRAIN_DF, VAL_DF, tmp_path, CPU)
    run = resume_run(4)
    change(run)
    calls = _count_steps(monkeypatch)
    second = train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert second["steps"] == 4 and len(calls) == 4 * len(lms)
    assert second["state"] != first["state"]
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4]


def test_changed_training_data_starts_afresh(lms, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    first = train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    other = TRAIN_DF.assign(context=TRAIN_DF["context"] + " It is old.")
    assert train(lms, resume_run(2), other, VAL_DF, tmp_path, CPU)["state"] != first["state"]


def test_steps_that_reshape_the_decay_start_afresh(lms, tmp_path, monkeypatch, caplog):
    """train.steps is outside the key, but only a schedule that continues the steps taken resumes."""
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    base = {"warmup_steps": 1}
    train(lms, resume_run(4, **base), TRAIN_DF, VAL_DF, tmp_path, CPU)
    calls = _count_steps(monkeypatch)
    summary = train(lms, resume_run(6, **base), TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert summary["steps"] == 6 and len(calls) == 6 * len(lms) and "starting afresh" in caplog.text
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_is_checked_when_read(lms, tmp_path, monkeypatch):
    """Its step must match its log, its key the run's; a foreign pickle is refused (weights_only)."""
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    summary = train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    path = Path(summary["state"])
    unit = torch.load(path, weights_only=True)
    torch.save({**unit, "step": 4}, path)  # say step 4 with a log of 2 steps
    with pytest.raises(ConfigError, match=r"checkpoint\.pt.*step 4"):
        train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    torch.save({**unit, "key": "0" * 16}, path)
    with pytest.raises(ConfigError, match=r"checkpoint\.pt.*key 0000"):
        train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    torch.save({**unit, "extra": Path("x")}, path)  # an object that weights_only refuses to build
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: unreadable"):
        train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: unreadable"):
        train(lms, resume_run(2), TRAIN_DF, VAL_DF, tmp_path, CPU)


# --- (5) collapse detector and best-checkpoint selection (validation faked: no generation) ----


def _fake_validate(ratio: float, f1s: list[float] | None = None, snapshots: list | None = None):
    calls = []

    def fake(lms, il, run, examples):
        i = len(calls)
        calls.append(i)
        if snapshots is not None:
            snapshots.append(il.trainable_state_dict())
        out = {lm.spec.name: {"f1": 0.0, "unique_prediction_ratio": ratio} for lm in lms}
        out["mean_f1"] = f1s[i] if f1s else 0.0
        return out

    return fake


@pytest.mark.parametrize(
    "ratio, collapse_after, stopped, steps",
    [(0.0, 2, "collapsed", 2), (0.0, 4, "collapsed", 4), (1.0, 2, "completed", 6)],
    ids=["collapses-at-2", "waits-for-collapse_after", "healthy"],
)
def test_collapse_detector(lms, tmp_path, monkeypatch, ratio, collapse_after, stopped, steps):
    monkeypatch.setattr(train_mod, "validate", _fake_validate(ratio))
    run = make_run(steps=6, eval_every=2, collapse_after=collapse_after, collapse_ratio=0.1, batch_size=2)
    summary = train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert summary["stopped"] == stopped and summary["steps"] == steps
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, steps + 1))
    assert torch.load(summary["state"], weights_only=True)["step"] == steps  # checkpointed on stop
    assert json.loads((tmp_path / "train_summary.json").read_text())["stopped"] == stopped


def test_best_checkpoint_is_the_best_validation_step(lms, tmp_path, monkeypatch):
    snaps: list = []
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0, [0.2, 0.5, 0.3], snaps))
    summary = train(lms, make_run(steps=6, eval_every=2, batch_size=2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert summary["best"] == {"mean_f1": 0.5, "step": 4} and len(snaps) == 3
    best = read_weights(tmp_path / "best.safetensors")
    assert_same_weights(best, snaps[1])
    assert not torch.equal(best["encoder.queries"], snaps[2]["encoder.queries"])


# --- (6) KD from the teacher cache, per-loss gradient norms, accumulation, checkpointing ----------


def test_train_draws_accum_steps_micro_batches_and_logs_norms_every_n(lms, tmp_path, monkeypatch):
    seen = []
    real = train_mod.train_step

    def spy(lms, il, run, batch, *args, **kw):
        seen.append((len(batch), kw["log_grad_norms"]))
        return real(lms, il, run, batch, *args, **kw)

    monkeypatch.setattr(train_mod, "train_step", spy)
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    run = make_run(steps=3, batch_size=2, accum_steps=2, grad_norm_every=2)
    train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert seen == [(4, False), (4, True), (4, False)]
    assert ["grad_norms" in r for r in read_log(tmp_path)] == [False, True, False]


def _select_run(lms, **train):
    run = make_run(**train)
    run.latent.n_shared, run.latent.n_private = 6, 0
    run.latent.encoder = EncoderArgs(name="select", d_z=32, n_heads=4, source_model=lms[0].spec.name)
    return run


def test_encoder_warmup_trains_only_the_scorer_without_running_receivers(lms, tmp_path, monkeypatch):
    calls = []
    real = train_mod.train_step
    monkeypatch.setattr(train_mod, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    run = _select_run(lms, steps=3, encoder_warmup_steps=2, batch_size=2)
    train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    log = read_log(tmp_path)
    assert [r["stage"] for r in log] == ["A0", "A0", "B"] and len(calls) == 1
    assert all("aux_loss" in r["encoder"] for r in log) and lms[0].spec.name not in log[0]
    with pytest.raises(ValueError, match="encoder_warmup_steps"):
        from_dict(
            LatentRunArgs, {"train": {"steps": 2, "encoder_warmup_steps": 3}}, where="latent"
        ).train.validate()


def test_encoder_warmup_needs_an_encoder_with_its_own_loss(lms, tmp_path):
    run = make_run(steps=1, encoder_warmup_steps=1)
    with pytest.raises(ValueError, match="no auxiliary loss"):
        train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)


def test_a_static_soft_prompt_is_not_stopped_as_collapsed(lms, tmp_path, monkeypatch):
    """Its Z ignores the input, so identical predictions are expected: it trains its whole budget."""
    monkeypatch.setattr(train_mod, "validate", _fake_validate(0.0))
    run = make_run(steps=4, eval_every=2, collapse_after=2, collapse_ratio=0.1, batch_size=2)
    run.latent.encoder.name = "static"
    summary = train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert summary["stopped"] == "completed" and summary["steps"] == 4


def test_stage_b_on_a_subset_with_a_frozen_encoder_moves_only_that_receivers_head(lms, tmp_path, monkeypatch):
    """train.stage_b_models + stage_b_encoder: false: the other receiver's input stays exactly as it was."""
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    built = []
    real_build = train_mod.build_interlingua

    def build(*args, **kw):
        il = real_build(*args, **kw)
        built.append(il.trainable_state_dict())
        return il

    monkeypatch.setattr(train_mod, "build_interlingua", build)
    calls = _count_steps(monkeypatch)
    train_on = lms[1].spec.name
    run = make_run(steps=2, eval_every=2, batch_size=2, stage_b_models=[train_on], stage_b_encoder=False)
    summary = train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert calls == [train_on, train_on]  # the other receiver never ran
    after = state_weights(summary)
    moved = {k for k in after if not torch.equal(after[k], built[0][k])}
    trained_key = f"adapters.{train_on.replace('.', '_')}"
    assert moved and all(k.startswith(trained_key) for k in moved), sorted(moved)


def test_stage_b_models_must_name_receivers(lms, tmp_path):
    with pytest.raises(ConfigError, match="stage_b_models.*nope"):
        train(lms, make_run(steps=1, stage_b_models=["nope"]), TRAIN_DF, VAL_DF, tmp_path, CPU)


# --- projector-only warm-up and the validated start ---------------------------------------------


def test_frozen_encoder_steps_train_only_the_heads_then_the_encoder(lms, tmp_path, monkeypatch):
    """encoder_frozen_steps 2 of 4: steps 1-2 run with the encoder frozen, 3-4 train it; the encoder's
    weights after step 2 are those it started with."""
    flags, snaps = [], []
    real = step_mod.train_step

    def spy(b_lms, il, *a, train_encoder=True, **kw):
        flags.append(train_encoder)
        snaps.append({k: v.clone() for k, v in il.encoder.state_dict().items()})
        return real(b_lms, il, *a, train_encoder=train_encoder, **kw)

    monkeypatch.setattr(train_mod, "train_step", spy)
    train(lms, make_run(steps=4, eval_every=4, encoder_frozen_steps=2), TRAIN_DF, VAL_DF, tmp_path, CPU)
    assert flags == [False, False, True, True]
    assert_same_weights(snaps[0], snaps[2])  # two frozen steps left the encoder as it started
    assert any(not torch.equal(snaps[2][k], snaps[3][k]) for k in snaps[2])  # step 3 moved it


def test_eval_at_start_validates_the_start_and_may_keep_it(lms, tmp_path):
    run = make_run(steps=2, eval_every=2, eval_at_start=True)
    summary = train(lms, run, TRAIN_DF, VAL_DF, tmp_path, CPU)
    start = summary["best"]["start_val"]
    torch.manual_seed(run.train.seed)  # the untrained interlingua train() starts from
    il = build_interlingua(run.latent, lms, CPU)
    rows = select_examples(VAL_DF, EvalArgs(n_examples=run.train.val_examples, seed=run.train.seed))
    assert start == validate(lms, il, run, rows)
    assert summary["best"]["step"] in (0, 2)
    assert summary["best"]["mean_f1"] >= start["mean_f1"]
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]  # the log still holds steps 1..N only


def test_encoder_frozen_steps_are_bounded_by_the_run():
    with pytest.raises(ConfigError, match="encoder_frozen_steps"):
        from_dict(
            LatentRunArgs, {"train": {"steps": 3, "encoder_frozen_steps": 4}}, where="latent"
        ).validate()


def test_sample_receiver_runs_one_drawn_receiver_per_step_on_the_same_batches(lms, tmp_path, monkeypatch):
    """train.sample_receiver: each step runs exactly one receiver, the draw is seeded (the same on a
    rerun) and reaches both over 8 steps, and the batches are those of the run without it."""
    runs: list[list] = []
    real = step_mod.train_step

    def spy(b_lms, il, run, batch, *a, **kw):
        runs[-1].append(([lm.spec.name for lm in b_lms], [e["id"] for e in batch]))
        return real(b_lms, il, run, batch, *a, **kw)

    monkeypatch.setattr(train_mod, "train_step", spy)
    monkeypatch.setattr(train_mod, "validate", _fake_validate(1.0))
    for i, sample in enumerate((True, True, False)):
        runs.append([])
        train(
            lms,
            make_run(steps=8, eval_every=8, sample_receiver=sample),
            TRAIN_DF,
            VAL_DF,
            tmp_path / str(i),
            CPU,
        )
    names = {lm.spec.name for lm in lms}
    drawn = [n for n, _ in runs[0]]
    assert all(len(n) == 1 for n in drawn) and {n[0] for n in drawn} == names
    assert runs[1] == runs[0]  # seeded by the step
    assert [ids for _, ids in runs[0]] == [ids for _, ids in runs[2]] and all(len(n) == 2 for n, _ in runs[2])
    assert [sorted(k for k in r if k in names) for r in read_log(tmp_path / "0")] == drawn
