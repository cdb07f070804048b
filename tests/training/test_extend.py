"""Adding a receiver to a trained wire (latentwire/training/extend.py, cli/add_receiver.py) on tiny models.

The wire is trained on tiny Llama + Qwen2 receivers; the newcomer is the tiny Gemma (a third
architecture: its embedding layer scales rows by sqrt(d) = 8, and it has no chat template). Old
receivers' Z, soft tokens and predictions must come out bit-identical, the frozen tensors must
match the source checkpoint's hash, and only the newcomer's head may move.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from toy_data import capital_frame

from latentwire.cli.add_receiver import TIMINGS
from latentwire.cli.main import main
from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.data.prepare import write_splits
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view, select_examples
from latentwire.heads.lora import LoraArgs
from latentwire.io import read_json, read_jsonl
from latentwire.latent.build import build_interlingua
from latentwire.latent.prompts import latent_prompt_maker
from latentwire.models import load_model, materialize
from latentwire.models.tiny import save_tiny
from latentwire.prompt import content_text
from latentwire.training.args import LatentRunArgs, TrainArgs
from latentwire.training.extend import (
    ExtendArgs,
    add_receiver,
    build_extended,
    check_frozen,
    extension_train_args,
    file_sha256,
    load_added,
)
from latentwire.training.loop import train

CPU = torch.device("cpu")
CITIES = [("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"), ("Madrid", "Spain")]
CITIES += [("Lisbon", "Portugal"), ("Vienna", "Austria"), ("Oslo", "Norway"), ("Dublin", "Ireland")]
NAMES = {"llama": "tiny-llama", "qwen2": "tiny-qwen2", "gemma": "tiny-gemma"}


TRAIN_DF, VAL_DF = capital_frame("train", CITIES[:6], 0), capital_frame("validation", CITIES[6:], 6)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Registry, manifests and loaded tiny models of the three families."""
    root = tmp_path_factory.mktemp("extend")
    entries, lms, manifests = {}, {}, {}
    for family, name in NAMES.items():
        entries[name] = {
            "family": family,
            "source": {"kind": "local", "path": str(save_tiny(family, root / family))},
            "context_limit": 1024,
        }
    registry = root / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": entries}))
    from latentwire.models import load_registry

    for name, spec in load_registry(registry).items():
        materialize(spec, root / "cache" / name)
        manifests[name] = str(root / "cache" / name / "manifest.json")
        lms[name] = load_model(spec, manifests[name], device="cpu")
    return {"root": root, "registry": str(registry), "lms": lms, "manifests": manifests}


def make_run(**train_kw) -> LatentRunArgs:
    cfg = {
        "latent": {
            "n_shared": 4,
            "n_private": 2,
            "encoder": {"name": "byte", "d_z": 16, "n_heads": 2, "n_layers": 1, "max_bytes": 128},
            "adapter": {"kind": "mlp", "hidden": 32, "dropout": 0.0},
        },
        "prompt": {"system_prompt": "", "user_template": "{content}", "answer_prefix": ""},
        "train": {"steps": 2, "batch_size": 2, "eval_every": 2, "val_examples": 2, "warmup_steps": 1}
        | {"log_every": 1000, "collapse_after": 1000, **train_kw},
        "eval": {"batch_size": 2, "max_new_tokens": 3, "n_examples": 0, "device": "cpu"},
    }
    return from_dict(LatentRunArgs, cfg, where="latent")


def ext_args(run: LatentRunArgs, **train_kw) -> ExtendArgs:
    t = extension_train_args(run.train, {"lr": 5e-3, **train_kw})
    return ExtendArgs(receiver="tiny-gemma", train=t, loss=run.loss)


@pytest.fixture(scope="module")
def wire(world):
    """A wire trained on tiny Llama + Qwen2 for 2 steps: (run, wire receivers, checkpoint)."""
    run = make_run()
    wire_lms = [world["lms"]["tiny-llama"], world["lms"]["tiny-qwen2"]]
    out = world["root"] / "wire"
    train(wire_lms, run, TRAIN_DF, VAL_DF, out, CPU)
    return run, wire_lms, out / "best.safetensors"


@pytest.fixture(scope="module")
def added(world, wire, tmp_path_factory):
    run, wire_lms, ckpt = wire
    out = tmp_path_factory.mktemp("added")
    ext = ext_args(run)
    res = add_receiver(run, ext, wire_lms, world["lms"]["tiny-gemma"], ckpt, TRAIN_DF, VAL_DF, out, CPU)
    return ext, out, res


# --- training: only the newcomer's head moves --------------------------------------------------


def test_add_receiver_trains_only_the_newcomers_head_and_records_hashes(world, wire, added):
    run, wire_lms, ckpt = wire
    ext, out, res = added
    rec = read_json(out / "extension.json")
    assert rec["source_sha256"] == file_sha256(ckpt) and rec["frozen_verified"]
    assert rec["wire_receivers"] == ["tiny-llama", "tiny-qwen2"] and rec["reads_private_of"] == "tiny-llama"
    assert rec["trainable_keys"] and all(k.startswith("adapters.tiny-gemma.") for k in rec["trainable_keys"])
    source, best = load_file(str(ckpt)), load_file(str(out / "best.safetensors"))
    assert set(best) == set(source) | set(rec["trainable_keys"])
    for k in source:  # every old tensor bit for bit
        assert torch.equal(best[k], source[k]), k
    fresh, _ = build_extended(run, ext, wire_lms, world["lms"]["tiny-gemma"], ckpt, CPU)
    init = fresh.trainable_state_dict()
    assert any(not torch.equal(best[k], init[k]) for k in rec["trainable_keys"])  # the newcomer learned
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["B", "B"] and set(log[-1]["val"]) == {"tiny-gemma", "mean_f1"}
    assert "encoder" not in log[0]  # no encoder loss: the wire is frozen


def test_old_receivers_z_soft_tokens_and_predictions_are_bit_identical(world, wire, added):
    run, wire_lms, ckpt = wire
    ext, out, _ = added
    old = build_interlingua(run.latent, wire_lms, CPU)
    old.load_trainable_state_dict(load_file(str(ckpt)))
    new, _ = load_added(run, ext, wire_lms, world["lms"]["tiny-gemma"], ckpt, out, CPU)
    old.eval(), new.eval()
    examples = select_examples(VAL_DF, EvalArgs(n_examples=0))
    texts = [content_text(model_view(e), run.prompt) for e in examples]
    with torch.no_grad():
        z_old, z_new = old.encode(texts), new.encode(texts)
        assert z_old.shape == z_new.shape and torch.equal(z_old, z_new)  # the wire: M unchanged
        for lm in wire_lms:
            assert torch.equal(old.read(z_old, lm.spec.name).soft, new.read(z_new, lm.spec.name).soft)
        # the newcomer reads the shared slots + the donor's private ones
        assert torch.equal(new.slots_for(z_new, "tiny-gemma"), new.slots_for(z_new, "tiny-llama"))
    assert new.wire_slots() == old.wire_slots() == 4 + 2 * 2
    for lm in wire_lms:
        rows = [
            evaluate(lm, examples, latent_prompt_maker(lm, il, run.prompt), run.prompt, run.eval)[0]
            for il in (old, new)
        ]
        untimed = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in rs] for rs in rows]
        assert untimed[0] == untimed[1]


@pytest.mark.parametrize(
    "heads, parts",
    [
        ({"deep_prefix": {"enabled": True}}, {"adapters", "deep"}),
        (
            {"coprocessor": {"enabled": True, "width": 16}, "lora": {"rank": 2}},
            {"adapters", "coproc", "lora"},
        ),
    ],
)
def test_every_reading_head_of_the_newcomer_trains_on_a_gemma_wire(world, tmp_path, heads, parts):
    """The third architecture on the wire (trained with a deep prefix or coprocessor + LoRA), then
    a Qwen2 newcomer: its heads of every kind train, every Gemma tensor stays as it was."""
    run = make_run(steps=1, eval_every=1)
    run = from_dict(LatentRunArgs, {**to_dict(run), "latent": {**to_dict(run.latent), **heads}}, where="x")
    # fresh copies: LoRA is injected into the models themselves
    gemma, qwen = (
        load_model(world["lms"][n].spec, world["manifests"][n], device="cpu")
        for n in ("tiny-gemma", "tiny-qwen2")
    )
    train([gemma], run, TRAIN_DF, VAL_DF, tmp_path / "w", CPU)
    ext = ExtendArgs(receiver="tiny-qwen2", train=extension_train_args(run.train, {}), loss=run.loss)
    ckpt = tmp_path / "w" / "best.safetensors"
    add_receiver(run, ext, [gemma], qwen, ckpt, TRAIN_DF, VAL_DF, tmp_path / "x", CPU)
    rec = read_json(tmp_path / "x" / "extension.json")
    assert {k.split(".")[0] for k in rec["trainable_keys"]} == parts
    assert all(k.split(".")[1] == "tiny-qwen2" for k in rec["trainable_keys"])
    source, best = load_file(str(ckpt)), load_file(str(tmp_path / "x" / "best.safetensors"))
    assert all(torch.equal(best[k], source[k]) for k in source)
    # what moved: heads against a fresh build; LoRA (in the model itself) has B != 0 only once trained
    init = build_extended(run, ext, [gemma], qwen, ckpt, CPU)[0].trainable_state_dict()
    moved = {
        k.split(".")[0]
        for k in rec["trainable_keys"]
        if not k.startswith("lora.") and not torch.equal(best[k], init[k])
    }
    moved |= {"lora" for k in rec["trainable_keys"] if "lora_B" in k and best[k].abs().sum() > 0}
    assert moved == parts


def test_the_newcomer_can_get_lora_of_its_own_on_a_wire_without(world, wire, tmp_path):
    run, wire_lms, ckpt = wire
    gemma_free = load_model(world["lms"]["tiny-gemma"].spec, world["manifests"]["tiny-gemma"], device="cpu")
    ext = replace(ext_args(run), lora=LoraArgs(rank=2, first_layers=1))
    add_receiver(run, ext, wire_lms, gemma_free, ckpt, TRAIN_DF, VAL_DF, tmp_path, CPU)
    rec = read_json(tmp_path / "extension.json")
    assert {k.split(".")[0] for k in rec["trainable_keys"]} == {"adapters", "lora"}
    best = load_file(str(tmp_path / "best.safetensors"))
    assert any(best[k].abs().sum() > 0 for k in rec["trainable_keys"] if "lora_B" in k)
    assert not any(k.startswith("lora.tiny-llama") or k.startswith("lora.tiny-qwen2") for k in best)
    il, _ = load_added(run, ext, wire_lms, gemma_free, ckpt, tmp_path, CPU)  # rebuilds and loads strictly
    assert il._lora.keys() == {"tiny-gemma"}
    with pytest.raises(ConfigError, match="has receiver LoRA already"):
        lora_run = replace(run, latent=replace(run.latent, lora=LoraArgs(rank=2)))
        build_extended(lora_run, ext, wire_lms, gemma_free, ckpt, CPU)


def test_a_changed_frozen_tensor_or_another_checkpoint_is_refused(world, wire, added, tmp_path):
    run, wire_lms, ckpt = wire
    ext, out, _ = added
    sd = load_file(str(out / "best.safetensors"))
    key = next(k for k in sd if k.startswith("encoder."))
    sd[key] = sd[key] + 1e-6
    save_file(sd, str(tmp_path / "tampered.safetensors"))
    rec = read_json(out / "extension.json")
    with pytest.raises(RuntimeError, match="frozen wire changed"):
        check_frozen(tmp_path / "tampered.safetensors", "tiny-gemma", rec["frozen_sha256"])
    # a wire of one receiver is another experiment: its checkpoint does not fit this one's receivers
    with pytest.raises(ConfigError, match="not a checkpoint of this experiment"):
        build_extended(run, ext, wire_lms[:1], world["lms"]["tiny-gemma"], ckpt, CPU)
    with pytest.raises(ConfigError, match="already on the wire"):
        build_extended(run, ExtendArgs(receiver="tiny-qwen2"), wire_lms, wire_lms[1], ckpt, CPU)


def test_extension_train_args_refuse_encoder_and_subset_keys():
    t = extension_train_args(TrainArgs(encoder_warmup_steps=5, stage_b_models=["a"], steps=9), {"steps": 3})
    assert (t.steps, t.encoder_warmup_steps, t.stage_b_models, t.stage_b_encoder) == (3, 0, [], False)
    with pytest.raises(ConfigError, match="encoder_warmup_steps"):
        extension_train_args(TrainArgs(), {"encoder_warmup_steps": 2})
    with pytest.raises(ConfigError, match="stage_b_encoder"):
        from_dict(ExtendArgs, {"receiver": "x", "train": {"stage_b_encoder": True}}, where="ext")


# --- CLI end to end: baselines, training, add-receiver, evaluation on the third architecture ---


def test_cli_baseline_train_add_receiver_and_evaluate(world, tmp_path):
    from latentwire.evaluation.baselines import BaselineArgs

    reg, man = world["registry"], world["manifests"]
    train_p, val_p, test_p = write_splits(
        {"train": TRAIN_DF, "validation": VAL_DF, "test": capital_frame("test", CITIES[6:], 20)},
        tmp_path / "data",
        {},
    )
    run = make_run()
    base = to_dict(BaselineArgs(name="text", prompt=run.prompt, eval=run.eval))
    bl = tmp_path / "baseline"
    argv = ["baseline", "--registry", reg, "--model", "tiny-gemma", "--manifest", man["tiny-gemma"]]
    argv += ["--data", str(test_p), "--config-json", json.dumps(base)]
    assert main([*argv, "--predictions", str(bl / "p.jsonl"), "--metrics", str(bl / "m.json")]) == 0
    assert read_json(bl / "m.json")["n"] == 2
    wire = ["tiny-llama", "tiny-qwen2"]
    common = ["--registry", reg, "--models", *wire, "--manifests", *(man[m] for m in wire)]
    common += ["--config-json", json.dumps(to_dict(run)), "--exp", "w", "--encoder-manifest", ""]
    tr, ev = tmp_path / "train", tmp_path / "eval"
    assert (
        main(
            [
                "train-latent",
                *common,
                "--train",
                str(train_p),
                "--validation",
                str(val_p),
                "--out-dir",
                str(tr),
            ]
        )
        == 0
    )
    ckpt = str(tr / "best.safetensors")
    assert (
        main(["eval-latent", *common, "--checkpoint", ckpt, "--data", str(test_p), "--out-dir", str(ev)]) == 0
    )
    ext = ext_args(run)
    add = [*common, "--receiver-manifest", man["tiny-gemma"], "--extend-json", json.dumps(to_dict(ext))]
    add += ["--checkpoint", ckpt]
    xt, xe = tmp_path / "xtrain", tmp_path / "xeval"
    assert (
        main(
            ["add-receiver", *add, "--train", str(train_p), "--validation", str(val_p), "--out-dir", str(xt)]
        )
        == 0
    )
    argv = ["eval-added-receiver", *add, "--extension-dir", str(xt), "--data", str(test_p)]
    assert main([*argv, "--reference-eval", str(ev), "--out-dir", str(xe)]) == 0
    check = read_json(xe / "wire_check.json")
    assert {m: v["identical_to_reference"] for m, v in check["old_receivers"].items()} == dict.fromkeys(
        wire, True
    )
    for variant, suffix in (("latent", ""), ("shuffled", ":shuffled"), ("zero", ":zero"), ("int8", ":int8")):
        m = read_json(xe / "tiny-gemma" / variant / "metrics.json")
        assert m["system"] == f"latent:w+tiny-gemma{suffix}" and m["model"] == "tiny-gemma"
    assert not (xe / "tiny-llama").exists()  # old receivers: the experiment's systems, not rewritten
    old = read_json(ev / "tiny-llama" / "latent" / "metrics.json")
    assert read_json(xe / "tiny-gemma" / "latent" / "metrics.json")["payload_bytes"] == old["payload_bytes"]
    joint = read_json(xe / "joint.json")
    assert {k for k in joint if k.startswith("f1_tiny")} == {f"f1_{m}" for m in [*wire, "tiny-gemma"]}
    assert joint["provenance"]["config"]["exp"] == "w+tiny-gemma"
    assert len(read_jsonl(xe / "wire_check" / "tiny-llama" / "predictions.jsonl")) == 2


# --- workflow config: latent.extensions --------------------------------------------------------


def _scenario(tmp_path, extensions: dict):
    """A copy of the .test scenario with ``latent.extensions``; returns (work dir, config dict)."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for sub in ("config", "data"):
        shutil.copytree(repo / ".test" / sub, tmp_path / sub)
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    cfg["latent"]["extensions"] = extensions
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, {**cfg, "registry": str(tmp_path / "config" / "models.yaml")}


def test_extensions_are_validated_and_join_the_tables(tmp_path):
    from latentwire.workflow import WorkflowPlan

    ext = {"from": "meanpool", "receiver": "tiny-gemma", "train": {"steps": 3}, "loss": {"w_first": 0.0}}
    _, cfg = _scenario(tmp_path, {"gemma": ext})
    plan = WorkflowPlan.from_config(cfg)
    x = plan.extensions["gemma"]
    assert x.label == "meanpool+tiny-gemma" and x.args.train.steps == 3 and x.args.loss.w_first == 0.0
    assert x.args.train.batch_size == plan.experiments["meanpool"].train.batch_size  # inherited
    assert plan.extension_receivers() == ["tiny-gemma"]
    assert ("squad", "tiny-gemma", "text") in plan.baseline_cells()  # its own baselines, for comparison
    news = plan.extension_eval_outputs("squad", "gemma")
    assert news == [
        f"results/extend/squad/meanpool+tiny-gemma/eval/tiny-gemma/{v}/metrics.json"
        for v in plan.latent_variants
    ]
    assert set(news) <= set(plan.table_metrics()) and len(plan.table_metrics()) == len(plan.table_datasets())
    assert "results/extend/squad/meanpool+tiny-gemma/eval/joint.json" in plan.final_outputs()
    assert plan.train_labels()[-1] == "squad/meanpool+tiny-gemma"
    assert json.loads(plan.extend_json("gemma"))["train"]["stage_b_encoder"] is False


@pytest.mark.parametrize(
    "entry, error",
    [
        ({"from": "nope", "receiver": "tiny-gemma"}, "gemma.from: 'nope' is not a latent experiment"),
        ({"from": "meanpool", "receiver": "tiny-llama"}, "already a receiver"),
        ({"from": "meanpool", "receiver": "gpt-9"}, "receiver: 'gpt-9' not in the registry"),
        ({"from": "meanpool", "receiver": "tiny-gemma", "train": {"stage_b_encoder": True}}, "gemma.train: "),
        ({"from": "meanpool", "receiver": "tiny-gemma", "train": {"stepz": 1}}, "stepz"),
        ({"from": "meanpool", "receiver": "tiny-gemma", "read_private_of": "x"}, "read_private_of: 'x'"),
    ],
)
def test_a_bad_extension_fails_at_parse_time(tmp_path, entry, error):
    from latentwire.workflow import WorkflowPlan

    _, cfg = _scenario(tmp_path, {"gemma": entry})
    with pytest.raises(ConfigError, match=error):
        WorkflowPlan.from_config(cfg)


def _snakemake(work, *args: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(repo / "workflow" / "Snakefile"),
        "--directory",
        str(work),
    ]
    return subprocess.run(
        [*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )


def test_snakemake_schedules_an_added_receiver_with_its_rivals(tmp_path):
    """The .test scenario with tiny-gemma added to meanpool's wire (M = 6, private slots read from
    tiny-llama): the dry run schedules the two extension jobs, the newcomer's baselines (the
    configured ones and the rivals at 6) and its text-tuned ceiling (select-text-8's is not one of
    its rivals). The .test workflow run itself (tests/test_workflow.py) adds it to select's wire."""
    from latentwire.workflow import WorkflowPlan

    ext = {"gemma": {"from": "meanpool", "receiver": "tiny-gemma", "train": {"steps": 2}}}
    work, cfg = _scenario(tmp_path, ext)
    plan = WorkflowPlan.from_config(cfg)
    assert plan.receiver_baselines("tiny-gemma") == [
        "text",
        "budget-8",
        "budget-16",
        "closed",
        "budget-6",
    ] + [f"{k}-6" for k in ("tail", "lexical", "selfinfo", "oracle")]
    assert [c for c in plan.tuned_cells() if c[1] == "tiny-gemma"] == [("squad", "tiny-gemma", "text", 0)]
    dry = _snakemake(work, "-n")
    assert dry.returncode == 0, dry.stdout[-3000:]
    jobs = {"add_receiver": 1, "eval_added_receiver": 1, "baseline": len(plan.baseline_cells())}
    jobs |= {"materialize_model": 3, "tune_text": 5, "eval_tuned": 5}
    for job, n in jobs.items():
        assert re.search(rf"^{job}\s+{n}$", dry.stdout, re.M), (job, dry.stdout[-2000:])


def test_two_extensions_adding_the_same_receiver_to_the_same_wire_are_refused(tmp_path):
    from latentwire.workflow import WorkflowPlan

    entry = {"from": "meanpool", "receiver": "tiny-gemma"}
    _, cfg = _scenario(tmp_path, {"a": entry, "b": {**entry, "train": {"steps": 9}}})
    with pytest.raises(
        ConfigError, match="extensions.b: adds 'tiny-gemma' to 'meanpool' like latent.extensions.a"
    ):
        WorkflowPlan.from_config(cfg)


def test_the_newcomers_registry_prompt_and_train_shots_reach_add_receiver_and_its_eval(
    world, tmp_path, capsys, monkeypatch
):
    """A newcomer registered as a base model (completion style, 2 solved train examples) on a wire
    whose receivers read the global prompt: add-receiver and eval-added-receiver build its inputs
    with its merged prompt and shots from the train split (never the evaluation split), record that
    prompt, and the old receivers' predictions stay identical to the experiment's own evaluation."""
    from pathlib import Path

    import latentwire.evaluation.evaluate as evaluate_mod
    import latentwire.latent.prompts as latent_mod
    import latentwire.prompt as prompt_mod
    import latentwire.training.step as step_mod

    entries = yaml.safe_load(Path(world["registry"]).read_text())
    base = {"style": "completion", "answer_prefix": "Answer:", "shots": 2}
    entries["models"]["tiny-gemma"]["prompt"] = {
        **base,
        "content_template": "Context: {context}\nQ: {question}",
    }
    reg = tmp_path / "models.yaml"
    reg.write_text(yaml.safe_dump(entries))
    man = world["manifests"]
    test_df = capital_frame("test", CITIES[6:], 20)
    train_p, val_p, test_p = write_splits(
        {"train": TRAIN_DF, "validation": VAL_DF, "test": test_df}, tmp_path / "data", {}
    )
    run = make_run()
    wire = ["tiny-llama", "tiny-qwen2"]
    common = ["--registry", str(reg), "--models", *wire, "--manifests", *(man[m] for m in wire)]
    common += ["--config-json", json.dumps(to_dict(run)), "--exp", "w", "--encoder-manifest", ""]
    tr, ev = tmp_path / "train", tmp_path / "eval"
    assert main(["train-latent", *common, "--train", str(train_p), "--validation", str(val_p), "--out-dir", str(tr)]) == 0  # fmt: skip
    ckpt = str(tr / "best.safetensors")
    assert main(["eval-latent", *common, "--checkpoint", ckpt, "--data", str(test_p), "--out-dir", str(ev)]) == 0  # fmt: skip

    seen = []  # (function, prompt args) of every build_prompt / answer_ids call from here on

    def spy(name, module):
        real = getattr(prompt_mod, name)

        def wrapped(*a, **kw):
            seen.append((name, a[2]))
            return real(*a, **kw)

        monkeypatch.setattr(module, name, wrapped)

    spy("build_prompt", latent_mod)
    for module in (evaluate_mod, step_mod):
        spy("answer_ids", module)
    add = [
        *common,
        "--receiver-manifest",
        man["tiny-gemma"],
        "--extend-json",
        json.dumps(to_dict(ext_args(run))),
    ]
    add += ["--checkpoint", ckpt]
    xt, xe = tmp_path / "xtrain", tmp_path / "xeval"
    assert main(["add-receiver", *add, "--train", str(train_p), "--validation", str(val_p), "--out-dir", str(xt)]) == 0  # fmt: skip
    prompts = read_json(xt / "run.json")["provenance"]["config"]["prompts"]
    own = prompts["tiny-gemma"]
    shot_ids = [s["id"] for s in own["shot_examples"]]
    assert own["style"] == "completion" and own["content_template"].endswith("Q: {question}")
    assert len(shot_ids) == 2 and set(shot_ids) <= set(TRAIN_DF["id"])
    assert all(prompts[m]["shot_examples"] == [] and prompts[m]["style"] == "instruct" for m in wire)
    trained = [args for _, args in seen if args.style == "completion"]
    assert trained and all([s.id for s in args.shot_examples] == shot_ids for args in trained)

    argv = ["eval-added-receiver", *add, "--extension-dir", str(xt), "--data", str(test_p)]
    argv += ["--reference-eval", str(ev), "--out-dir", str(xe)]
    capsys.readouterr()
    assert main(argv) == 2  # the newcomer's shots need the train split
    assert "need the train split (--shots-from)" in capsys.readouterr().err
    assert main([*argv, "--shots-from", str(test_p)]) == 2  # never the evaluation split
    assert "train split only" in capsys.readouterr().err
    seen.clear()
    assert main([*argv, "--shots-from", str(train_p)]) == 0
    check = read_json(xe / "wire_check.json")
    assert all(v["identical_to_reference"] for v in check["old_receivers"].values())
    m = read_json(xe / "tiny-gemma" / "latent" / "metrics.json")
    assert m["provenance"]["config"]["prompts"]["tiny-gemma"] == own  # the prompt it was trained with
    names = {name for name, args in seen if args.style == "completion"}
    assert names == {"build_prompt", "answer_ids"}  # the newcomer's scaffold and gold ids
    assert all(len(args.shot_examples) == 2 for _, args in seen if args.style == "completion")
