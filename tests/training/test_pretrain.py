"""Pretraining of the pooled-lm encoder on two tiny receivers: only train-split articles are read,
the loss goes down, the checkpoint starts a QA fine-tuning run (stage_a / stage_b's code path) whose
loss goes down too, and the workflow-level compatibility check."""

import json

import pandas as pd
import pytest
import torch
from toy_data import capital_frame

from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.data.schema import COLUMNS
from latentwire.latent.build import build_interlingua
from latentwire.latent.wire import WireArgs
from latentwire.models import load_model, materialize
from latentwire.models.tiny import save_tiny
from latentwire.training.args import LatentRunArgs
from latentwire.training.loop import train
from latentwire.training.pretrain import (
    PretrainArgs,
    PretrainRunArgs,
    check_pretrained,
    load_pretrained,
    make_task,
    pretrain,
    pretrain_contexts,
    pretrain_step,
    receiver_loss,
    save_pretrained,
    target_ids,
)

CPU = torch.device("cpu")
CITIES = [
    ("Paris", "France"),
    ("Rome", "Italy"),
    ("Berlin", "Germany"),
    ("Madrid", "Spain"),
    ("Lisbon", "Portugal"),
    ("Vienna", "Austria"),
    ("Oslo", "Norway"),
    ("Dublin", "Ireland"),
]


RIVER = "{city} is the capital and largest city of {country}. It lies on a river."
TRAIN_DF, VAL_DF, TEST_DF = (
    capital_frame("train", CITIES[:6], 0, context=RIVER),
    capital_frame("validation", CITIES[6:7], 6, context=RIVER),
    capital_frame("test", CITIES[7:], 7, context=RIVER),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lms(make_local_spec, tmp_path_factory):
    out = []
    for family, name in (("llama", "tiny-llama3.2"), ("qwen2", "tiny-qwen2.5")):
        root = tmp_path_factory.mktemp(f"pre-{family}")
        spec = make_local_spec(name, save_tiny(family, root / "model"), context_limit=1024)
        materialize(spec, root / "cache")
        out.append(load_model(spec, root / "cache" / "manifest.json", device="cpu"))
    return out


LATENT = {
    "n_shared": 6,
    "n_private": 0,
    "encoder": {
        "name": "pooled-lm",
        "source_model": "tiny-qwen2.5",
        "d_z": 32,
        "drop_last": 0,
        "train_layers": 1,
        "pool_factor": 4,
    },
    "adapter": {"kind": "linear2", "hidden": 32, "markers": True},
}


def pre_run(**pretrain) -> PretrainRunArgs:
    cfg = {"latent": LATENT, "pretrain": {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, **pretrain}}
    return from_dict(PretrainRunArgs, cfg, where="pretrain")


def test_pretrain_contexts_refuse_held_out_articles():
    assert len(pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF])) == 6
    leaked = pd.concat([TRAIN_DF, VAL_DF.assign(split="train")])
    with pytest.raises(ValueError, match="held-out articles"):
        pretrain_contexts(leaked, [VAL_DF, TEST_DF])
    with pytest.raises(ValueError, match="train split only"):
        pretrain_contexts(pd.concat([TRAIN_DF, VAL_DF]), [TEST_DF])


def test_tasks_split_a_context():
    import numpy as np

    ctx = " ".join(f"w{i}" for i in range(20))
    seg, cont = make_task(ctx, "continuation", PretrainArgs(), np.random.default_rng(0))
    assert (seg + cont).split() == ctx.split() and 8 <= len(seg.split()) <= 16
    seg, target = make_task(
        ctx, "reconstruction", PretrainArgs(max_segment_words=5), np.random.default_rng(0)
    )
    assert seg == target == "w0 w1 w2 w3 w4"


def test_random_segment_starts_draw_contiguous_spans_from_the_first_half():
    import numpy as np

    ctx = " ".join(f"w{i}" for i in range(40))
    rng = np.random.default_rng(0)
    args = PretrainArgs(segment_start="random", max_segment_words=10)
    starts = set()
    for task in ("continuation", "reconstruction") * 20:
        seg, target = make_task(ctx, task, args, rng)
        first = int(seg.split()[0][1:])
        starts.add(first)
        joined = (seg + target) if task == "continuation" else seg
        assert joined.split() == ctx.split()[first : first + len(joined.split())]  # contiguous
        assert first <= 20 and len(seg.split()) <= 10
        if task == "continuation":
            assert (seg + target).split()[-1] == "w39"  # the target runs to the context's end
    assert len(starts) > 5
    assert make_task(ctx, "reconstruction", PretrainArgs(), rng)[0].startswith("w0 ")
    with pytest.raises(ConfigError, match="segment_start"):
        pre_run(segment_start="middle")


def test_pretraining_reads_train_articles_only_and_writes_a_checkpoint(lms, tmp_path):
    run = pre_run(steps=3, heldout_contexts=2)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    seen: list[str] = []
    forward = il.encoder.forward
    il.encoder.forward = lambda texts: (seen.extend(texts), forward(texts))[1]
    summary = pretrain(lms, il, run, pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF]), tmp_path)
    train_words = [c.split() for c in TRAIN_DF["context"]]
    assert seen and all(any(w[: len(s.split())] == s.split() for w in train_words) for s in seen)
    held_out = set(VAL_DF["title"]) | set(TEST_DF["title"]) | set(VAL_DF["context"]) | set(TEST_DF["context"])
    assert not any(t in s for s in seen for t in held_out)
    assert summary["steps"] == 3 and summary["contexts"] == 4 and summary["heldout_contexts"] == 2
    log = [json.loads(x) for x in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert (tmp_path / "encoder.safetensors").is_file()


def test_pretraining_loss_goes_down(lms):
    run = pre_run(batch_size=2, lr=5e-3, continuation_share=0.0)  # the same 2 reconstructions each step
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    params = il.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=run.pretrain.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ctx = list(TRAIN_DF["context"][:2])
    log = [pretrain_step(lms, il, run.pretrain, ctx, s, params, opt, sched) for s in range(6)]
    for lm in lms:
        losses = [r[lm.spec.name]["loss"] for r in log]
        assert losses[-1] < losses[0] - 0.03, (lm.spec.name, losses)  # random tiny models move slowly
        assert all(r[lm.spec.name].keys() == {"loss", "reconstruction"} for r in log)


def test_receiver_loss_is_the_mean_target_token_nll(lms):
    """receiver_loss against a hand count: each row's receiver prompt (slots, cue, target) scored by
    a plain forward, log-softmax over the vocabulary, the gold next token's log-probability."""
    from latentwire.latent.prompts import trim_soft

    run = pre_run(batch_size=3, continuation_share=0.5)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU).eval()
    a = run.pretrain
    segs = ["Paris is the capital of France and lies on a river", "Rome is old", "Oslo lies on a fjord"]
    tasks = ["reconstruction", "continuation", "reconstruction"]
    targets = [" Paris is the capital", " and large", " Oslo lies"]
    lm = lms[0]
    with torch.no_grad():
        z = il.encode(segs)
        loss, parts = receiver_loss(lm, il, z, targets, tasks, a)
        soft = trim_soft(il.read(z, lm.spec.name, None).soft.to(lm.dtype), None, il.args.adapter.markers)
        emb = lm.model.get_input_embeddings()
        cue = lm.tokenizer(a.reconstruct_cue, add_special_tokens=False)["input_ids"]
        nll = []
        for i, (t, ids) in enumerate(zip(tasks, target_ids(lm, targets, tasks, a))):
            head = torch.cat([soft[i], emb(torch.tensor(cue))]) if t == "reconstruction" else soft[i]
            x = torch.cat([head, emb(torch.tensor(ids))])[None]  # (1, P + A, d)
            lp = torch.log_softmax(lm.model(inputs_embeds=x).logits[0].float(), -1)  # (P + A, V)
            P = head.shape[0]
            nll.append(torch.stack([-lp[P - 1 + j, g] for j, g in enumerate(ids)]))
    want = torch.cat(nll).mean()  # every real target token of the batch weighs the same
    assert float(loss) == pytest.approx(float(want), rel=1e-4)
    assert parts["continuation"] == pytest.approx(float(nll[1].mean()), rel=1e-4)
    assert parts["reconstruction"] == pytest.approx(float((nll[0].mean() + nll[2].mean()) / 2), rel=1e-4)


def qa_run(steps: int, **latent) -> LatentRunArgs:
    cfg = {
        "latent": {**LATENT, **latent},
        "prompt": {"system_prompt": "", "user_template": "{content}", "answer_prefix": ""},
        "loss": {"w_answer": 1.0, "w_first": 0.5},
        "train": {
            "steps": steps,
            "batch_size": 6,  # the whole train split every step: the loss curve is not batch noise
            "lr": 3e-3,
            "warmup_steps": 1,
            "eval_every": steps,
            "val_examples": 1,
            "log_every": 1000,
            "collapse_after": 1000,
        },
        "eval": {"batch_size": 4, "max_new_tokens": 3},
    }
    return from_dict(LatentRunArgs, cfg, where="latent")


def test_pretrained_checkpoint_starts_qa_fine_tuning(lms, tmp_path):
    """Pretrain at PF 8 (cap 6), fine-tune at PF 4 (cap 8) through train(): the encoder and
    projectors start exactly from the checkpoint and five steps lower both receivers' loss."""
    run = pre_run(steps=2)
    run.latent.encoder.pool_factor = 8
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    pretrain(lms, il, run, pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF]), tmp_path / "pre")
    ckpt = tmp_path / "pre" / "encoder.safetensors"
    qa = qa_run(5, n_shared=8, encoder={**LATENT["encoder"], "pool_factor": 4, "pretrained": "p8"})
    torch.manual_seed(1)
    fresh = build_interlingua(qa.latent, lms, CPU)
    load_pretrained(fresh, ckpt)
    want = {k: v for k, v in il.trainable_state_dict().items()}
    got = fresh.trainable_state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    summary = train(lms, qa, TRAIN_DF, VAL_DF, tmp_path / "qa", CPU, init_from=ckpt)
    assert summary["stopped"] == "completed" and summary["steps"] == 5
    log = [json.loads(x) for x in (tmp_path / "qa" / "train_log.jsonl").read_text().splitlines()]
    for lm in lms:
        losses = [r[lm.spec.name]["loss"] for r in log]
        assert losses[-1] < losses[0], (lm.spec.name, losses)


def test_save_load_round_trip_is_bit_identical(lms, tmp_path):
    run = pre_run()
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    with torch.no_grad():
        for p in il.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_pretrained(il, tmp_path / "e.safetensors")
    torch.manual_seed(3)
    other = build_interlingua(run.latent, lms, CPU)
    load_pretrained(other, tmp_path / "e.safetensors")
    il.eval(), other.eval()
    assert il.positions() == 6 + 2  # the cap's slots plus the begin / end markers
    texts = list(TRAIN_DF["context"][:3])
    with torch.no_grad():
        z = il.encode(texts)
        assert torch.equal(other.encode(texts), z)
        for lm in lms:
            assert torch.equal(other.read(z, lm.spec.name).soft, il.read(z, lm.spec.name).soft)


def test_check_pretrained():
    pre = {"p8": pre_run()}
    ok = qa_run(5, encoder={**LATENT["encoder"], "pool_factor": 2, "pretrained": "p8"})
    check_pretrained("e", ok.latent, pre)
    with pytest.raises(ConfigError, match="not a pretrain run"):
        check_pretrained("e", qa_run(5, encoder={**LATENT["encoder"], "pretrained": "nope"}).latent, pre)
    with pytest.raises(ConfigError, match="d_z"):
        check_pretrained(
            "e", qa_run(5, encoder={**LATENT["encoder"], "d_z": 16, "pretrained": "p8"}).latent, pre
        )
    # a projector without the calibration gain could not load the checkpoint's log_scale: refused at parse
    uncalibrated = {**LATENT["adapter"], "calibrate_rms": False}
    with pytest.raises(ConfigError, match=r"\(adapter.calibrate_rms\)"):
        check_pretrained(
            "e",
            qa_run(5, encoder={**LATENT["encoder"], "pretrained": "p8"}, adapter=uncalibrated).latent,
            pre,
        )


@pytest.mark.parametrize("trim", [False, True], ids=["all-slots", "trim-pad"])
def test_cli_pretrain_then_fine_tune_then_evaluate_every_wire_format(lms, tmp_path, trim):
    """What the rules run: pretrain-encoder → train-latent --init-checkpoint → eval-latent with the
    int8 / int4 / pq wire variants (pq fitted on the train split), on the tiny receivers. With
    ``latent.trim_pad`` (cap 24: no text fills it) every byte count follows each message's slots."""
    import math

    import yaml

    from latentwire.cli.main import main
    from latentwire.data.prepare import write_splits

    registry = tmp_path / "models.yaml"
    entries = {
        lm.spec.name: {"family": "tiny", "source": {"kind": "local", "path": lm.spec.source.path}}
        for lm in lms
    }
    registry.write_text(yaml.safe_dump({"models": entries}))
    manifests = []
    for lm in lms:  # the same local exports, materialized again (fast: a local folder)
        materialize(lm.spec, tmp_path / f"cache-{lm.spec.name}")
        manifests.append(str(tmp_path / f"cache-{lm.spec.name}" / "manifest.json"))
    frames = {"train": TRAIN_DF, "validation": VAL_DF, "test": TEST_DF}
    write_splits({k: v[list(COLUMNS)] for k, v in frames.items()}, tmp_path / "data", {})
    data = {k: str(tmp_path / "data" / f"{k}.parquet") for k in frames}
    models = [
        "--registry",
        str(registry),
        "--models",
        *(lm.spec.name for lm in lms),
        "--manifests",
        *manifests,
    ]
    pre = pre_run(steps=2, heldout_contexts=1)
    pre.device, pre.latent.trim_pad = "cpu", trim
    assert main(["pretrain-encoder", *models, "--config-json", json.dumps(to_dict(pre)), "--train", data["train"],
                 "--held-out", data["validation"], data["test"], "--out-dir", str(tmp_path / "pre")]) == 0  # fmt: skip
    ckpt = tmp_path / "pre" / "encoder.safetensors"
    qa = qa_run(
        3, n_shared=24 if trim else 8, trim_pad=trim, encoder={**LATENT["encoder"], "pretrained": "p"}
    )
    qa.latent.wire = from_dict(
        WireArgs, {"formats": ["int8", "int4", "pq"], "pq_subvectors": 4, "pq_bits": 3}
    )
    qa.eval.device, qa.eval.n_examples = "cpu", 0
    cfg = ["--config-json", json.dumps(to_dict(qa)), "--exp", "p4"]
    assert main(["train-latent", *models, *cfg, "--train", data["train"], "--validation", data["validation"],
                 "--init-checkpoint", str(ckpt), "--out-dir", str(tmp_path / "train")]) == 0  # fmt: skip
    run = json.loads((tmp_path / "train" / "run.json").read_text())
    assert run["provenance"]["config"]["init_checkpoint"] == str(ckpt)
    assert main(["eval-latent", *models, *cfg, "--checkpoint", str(tmp_path / "train" / "best.safetensors"),
                 "--data", data["test"], "--fit-data", data["train"], "--out-dir", str(tmp_path / "eval")]) == 0  # fmt: skip
    for lm in lms:
        got = {v: json.loads((tmp_path / "eval" / lm.spec.name / v / "metrics.json").read_text()) for v in
               ("latent", "shuffled", "zero", "int8", "int4", "pq")}  # fmt: skip
        rows = [
            json.loads(x) for x in (tmp_path / "eval" / lm.spec.name / "latent" / "predictions.jsonl").open()
        ]
        slots = [r["wire_slots"] for r in rows]  # each message's; W = 8 without trim_pad

        def mean(size, slots=slots):
            return sum(size(n) for n in slots) / len(slots)

        assert (max(slots) < 24) if trim else (set(slots) == {8})
        assert got["latent"]["payload_bytes"] == mean(lambda n: n * 32 * 2)  # fp16
        assert got["int8"]["payload_bytes"] == mean(lambda n: n * 32 + 2 * n)  # M × d_z × 8 / 8 + fp16 scales
        assert got["int4"]["payload_bytes"] == mean(lambda n: n * 32 // 2 + 2 * n)
        assert got["pq"]["payload_bytes"] == mean(lambda n: math.ceil(n * 4 * 3 / 8))
        assert got["pq"]["codebook_bytes"] == 4 * 8 * 8 * 2
        assert got["latent"]["content_positions"] == mean(lambda n: n + 2)  # + the two markers
        assert got["pq"]["system"] == "latent:p4:pq"
        assert got["shuffled"]["control"] == "shuffled" and got["zero"]["control"] == "zero"
    joint = json.loads((tmp_path / "eval" / "joint.json").read_text())
    assert {"f1_joint", "f1_oracle", "f1_best_single"} <= set(joint)  # joint rescoring ran on the same Z


def test_pretrained_encoder_feeds_a_deep_prefix_head(lms, tmp_path):
    """Z of the pretrained pooled encoder read as per-layer K/V (deep prefix) beside the soft tokens:
    the prefix generators start fresh, everything trains through train()."""
    run = pre_run(steps=1)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    save_pretrained(il, tmp_path / "e.safetensors")
    qa = qa_run(2, deep_prefix={"enabled": True, "hidden": 32})
    summary = train(lms, qa, TRAIN_DF, VAL_DF, tmp_path / "qa", CPU, init_from=tmp_path / "e.safetensors")
    assert summary["stopped"] == "completed"
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "qa" / "best.safetensors"))
    assert any(k.startswith("deep.") for k in best) and any(k.startswith("encoder.top.") for k in best)


def test_a_non_finite_pretraining_step_is_skipped(lms, tmp_path, monkeypatch):
    """A NaN gradient (seen on GPU in bf16) skips that update; the encoder's weights stay finite."""
    import latentwire.training.pretrain as pre

    real, calls = pre.receiver_loss, []

    def poisoned(*a, **k):  # step 2's second receiver returns a NaN loss (held-out calls: no grad)
        loss, parts = real(*a, **k)
        calls.extend([1] if torch.is_grad_enabled() else [])
        return (loss * float("nan"), parts) if len(calls) == len(lms) + 1 else (loss, parts)

    monkeypatch.setattr(pre, "receiver_loss", poisoned)
    run = pre_run(steps=3, heldout_contexts=2)
    torch.manual_seed(0)
    il = build_interlingua(run.latent, lms, CPU)
    summary = pretrain(lms, il, run, pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF]), tmp_path)
    assert summary["skipped_nonfinite_steps"] == [2]
    assert all(torch.isfinite(p).all() for p in il.trainable_parameters())


def test_regress_start_fits_the_projectors_before_pretraining(lms, tmp_path, monkeypatch):
    """adapter.init regress in a pretraining: the ridge start is fitted before step 1 on train contexts
    only, cut to max_segment_words (what reconstruction compresses); the summary records its R², the
    checkpoint holds the fitted projectors (not the default start); no source model: refused."""
    import latentwire.training.pretrain as pre

    contexts = pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF])
    fitted, weights = [], {}
    real_fit = pre.fit_projectors

    def spy(il, lms_, src, texts):
        fitted.append(list(texts))
        return real_fit(il, lms_, src, texts)

    monkeypatch.setattr(pre, "fit_projectors", spy)
    for init in ("default", "regress"):
        latent = {**LATENT, "adapter": {"kind": "linear2", "hidden": 32, "markers": False, "init": init}}
        pre_cfg = {"steps": 1, "lr": 1e-12, "batch_size": 4, "heldout_contexts": 2, "max_segment_words": 5}
        run = from_dict(PretrainRunArgs, {"latent": latent, "pretrain": pre_cfg}, where="pretrain")
        torch.manual_seed(0)
        il = build_interlingua(run.latent, lms, CPU)
        summary = pretrain(lms, il, run, contexts, tmp_path / init)
        weights[init] = {k: v.clone() for k, v in il.adapters.state_dict().items()}
        assert ("regress_fit" in summary) == (init == "regress")
    assert len(fitted) == 1 and len(fitted[0]) == 4  # the 4 train contexts left after 2 held out
    train_words = [c.split() for c in TRAIN_DF["context"]]
    assert all(len(t.split()) == 5 and any(w[:5] == t.split() for w in train_words) for t in fitted[0])
    assert any(not torch.allclose(weights["default"][k], weights["regress"][k]) for k in weights["regress"])
    no_src = {**LATENT["encoder"], "name": "meanpool"}
    latent = {**LATENT, "encoder": no_src, "adapter": {"kind": "linear2", "init": "regress"}}
    run = from_dict(PretrainRunArgs, {"latent": latent, "pretrain": {"steps": 1}}, where="pretrain")
    il = build_interlingua(run.latent, lms, CPU)
    with pytest.raises(ConfigError, match="needs an encoder with a source_model"):
        pre.regress_start(il, run, lms, [], contexts)


def test_keep_best_writes_the_state_of_the_lowest_held_out_loss(lms, tmp_path, monkeypatch):
    """eval_every 2 over 5 steps measures the held-out loss at steps 0, 2, 4, 5; with keep: best the
    checkpoint and the module in memory are step 2's state (the scripted minimum), the summary names
    it and keeps the whole curve; a start that is never beaten is kept as step 0."""
    import latentwire.training.pretrain as pre

    for script, kept in (([5.0, 3.0, 4.0, 4.5], 2), ([1.0, 3.0, 4.0, 4.5], 0)):
        states, losses = {}, iter(script)

        def scripted(lms_, il, args, held, _losses=losses, _states=states):
            value = next(_losses)  # the state at this evaluation, and a scripted loss for it
            _states[value] = {k: v.clone() for k, v in il.trainable_state_dict().items()}
            return {lm.spec.name: {"loss": value} for lm in lms_}

        monkeypatch.setattr(pre, "heldout_loss", scripted)
        run = pre_run(steps=5, heldout_contexts=2, eval_every=2, keep="best")
        torch.manual_seed(0)
        il = build_interlingua(run.latent, lms, CPU)
        out = tmp_path / str(kept)
        summary = pretrain(lms, il, run, pretrain_contexts(TRAIN_DF, [VAL_DF, TEST_DF]), out)
        assert summary["checkpoint_step"] == kept
        assert [c["step"] for c in summary["heldout_curve"]] == [0, 2, 4, 5]
        assert summary["heldout_after"][lms[0].spec.name]["loss"] == min(script)
        assert summary["heldout_last"][lms[0].spec.name]["loss"] == 4.5
        want = states[min(script)]
        assert any(not torch.equal(want[k], v) for k, v in states[4.5].items())  # the steps moved it
        fresh = build_interlingua(run.latent, lms, CPU)
        load_pretrained(fresh, out / "encoder.safetensors")
        for module in (fresh, il):
            got = module.trainable_state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want if k.startswith(pre.PRETRAINED_PARTS))


def test_keep_best_needs_held_out_evaluations():
    with pytest.raises(ConfigError, match="needs eval_every"):
        pre_run(keep="best")
    with pytest.raises(ConfigError, match="pretrain.keep"):
        pre_run(keep="first", eval_every=2)
