"""A base model's registry prompt reaches every path with the same ids, and k-shot examples come
from the train split only.

The model is the tiny random model of ``family`` registered with ``chat_template: plain`` (a base
model: no chat template) and a registry ``prompt:`` override (completion style, context first,
2 shots). The run's global prompt is the default instruct prompt. Every call of the prompt contract
(``build_prompt`` / ``answer_ids``) made by the text baseline, the discrete comparators (tail,
lexical, selfinfo, oracle, select-text), the latent scaffold (evaluation and training), the text
teacher, the text-tuned ceilings (``tune-text`` / ``eval-tuned``) and training's gold answers is
recorded: each must receive the model's merged prompt and produce the same ids as one direct call.
``select-windows`` reads the run's content text, exactly what the latent's encoder reads.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml
from toy_data import capital_frame

import latentwire.evaluation.baselines as baselines_mod
import latentwire.evaluation.comparators as comparators_mod
import latentwire.evaluation.evaluate as evaluate_mod
import latentwire.latent.build as build_mod
import latentwire.latent.prompts as latent_mod
import latentwire.prompt as prompt_mod
import latentwire.training.step as step_mod
import latentwire.training.teacher as teacher_mod
import latentwire.training.text_tuning as tuning_mod
from latentwire.batching import embed_ids
from latentwire.cli import baseline as baseline_cli
from latentwire.cli import latent as latent_cli
from latentwire.cli import select_windows as windows_cli
from latentwire.cli.main import main
from latentwire.cli.tuned import load_windows
from latentwire.config import from_dict, to_dict
from latentwire.evaluation.baselines import text_prompt_maker
from latentwire.evaluation.evaluate import EvalArgs, evaluate, model_view, select_examples
from latentwire.heads.lora import LoraArgs
from latentwire.io import read_jsonl
from latentwire.latent.build import build_interlingua
from latentwire.latent.prompts import latent_inputs, latent_prompt_maker
from latentwire.models import load_model, materialize
from latentwire.prompt import PromptArgs, attach_shots, build_prompt, content_text, prompt_for
from latentwire.scaffold_cache import scaffold_cache_off
from latentwire.training.args import LatentRunArgs, TrainArgs
from latentwire.training.step import train_step
from latentwire.training.teacher import TeacherArgs, compute_teacher_topk
from latentwire.training.text_tuning import TunedArgs, tuned_step

CPU = torch.device("cpu")
BASE_PROMPT = {
    "style": "completion",
    "content_template": "Context: {context}\nQuestion: {question}",
    "shots": 2,
}
CITIES = [("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"), ("Madrid", "Spain")]
CITIES += [("Lisbon", "Portugal"), ("Vienna", "Austria"), ("Oslo", "Norway"), ("Dublin", "Ireland")]


@pytest.fixture(autouse=True)
def whole_prompts():
    """These tests compare whole prompts id by id: the scaffold cache stays off (test_scaffold_cache)."""
    with scaffold_cache_off():
        yield


SHORT = "{city} is the capital of {country}."
TRAIN = capital_frame("train", CITIES[:5], 0, context=SHORT, id_format="{split}-{n}")
TEST = capital_frame("test", CITIES[5:], 5, context=SHORT, id_format="{split}-{n}")
LATENT = {
    "n_shared": 3,
    "n_private": 2,
    "encoder": {"name": "byte", "d_z": 16, "n_heads": 2, "n_layers": 1, "max_bytes": 256},
    "adapter": {"kind": "mlp", "hidden": 32, "dropout": 0.0},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base(tiny_dir, make_local_spec, tmp_path_factory):
    """(spec, loaded model, cache dir) of the tiny model registered as a base model."""
    spec = make_local_spec(
        "tiny-base", tiny_dir, chat_template="plain", context_limit=1024, prompt=BASE_PROMPT
    )
    cache = tmp_path_factory.mktemp("base-cache")
    materialize(spec, cache)
    lm = load_model(spec, cache / "manifest.json", device="cpu")
    assert not lm.uses_chat_template
    return spec, lm, cache


@pytest.fixture
def calls(monkeypatch):
    """Every build_prompt / answer_ids call of the paths under test: (function, module, args, result)."""
    out = []

    def spy(name, module):
        real = getattr(prompt_mod, name)

        def wrapped(*a, **kw):
            result = real(*a, **kw)
            out.append((name, module.__name__, a[2], result, a, kw))
            return result

        monkeypatch.setattr(module, name, wrapped)

    for module in (baselines_mod, build_mod, latent_mod, teacher_mod, step_mod):
        spy("build_prompt", module)
    for module in (evaluate_mod, teacher_mod, step_mod, tuning_mod):
        spy("answer_ids", module)
    return out


def test_registry_prompt_reaches_every_path_with_identical_ids(base, calls):
    spec, lm, _ = base
    tok = lm.tokenizer
    run = from_dict(LatentRunArgs, {"latent": LATENT, "loss": {"w_kd": 1.0, "k_tokens": 2}}, "latent")
    run.prompt = attach_shots(run.prompt, [spec], TRAIN)  # the global (instruct) prompt + the pool
    own = prompt_for(spec, run.prompt)
    assert own.style == "completion" and run.prompt.style == "instruct"
    assert [s.id for s in own.shot_examples] == [s.id for s in run.prompt.shot_examples[:2]]
    examples = select_examples(TEST, EvalArgs(n_examples=0))
    views = [model_view(e) for e in examples]
    text_ids = {v["question"]: build_prompt(v, tok, own, False, "text").ids for v in views}
    scaffold = {v["question"]: build_prompt(v, tok, own, False, "latent") for v in views}

    # the rendering a base model continues: shots, then context, question and the anchor
    shown = tok.decode(text_ids[views[0]["question"]], skip_special_tokens=True)
    shot = own.shot_examples[0]
    assert shown.startswith(f"Context: {shot.context}\nQuestion: {shot.question}\nAnswer: {shot.answer}\n\n")
    assert shown.endswith(f"Context: {views[0]['context']}\nQuestion: {views[0]['question']}\nAnswer:")
    assert PromptArgs().system_prompt not in shown

    ev = EvalArgs(batch_size=2, max_new_tokens=4, device="cpu")
    torch.manual_seed(0)
    il = build_interlingua(run.latent, [lm], CPU)
    with torch.no_grad():
        # text baseline: the embeddings the model reads are those of the direct ids
        embeds = text_prompt_maker(lm, run.prompt, "text")(views).embeds
        for v, e in zip(views, embeds):
            assert torch.equal(e, embed_ids(lm.model, text_ids[v["question"]], CPU))
        rows, _ = evaluate(lm, examples, text_prompt_maker(lm, run.prompt, "text"), run.prompt, ev)
        assert all("\n" not in r["prediction"] for r in rows)
        # latent scaffold: real prefix and suffix ids around the soft tokens
        z = il.encode([content_text(v, run.prompt) for v in views])
        prompts, _ = latent_inputs(lm, il, run.prompt, views, z)
        for v, p in zip(views, prompts):
            s = scaffold[v["question"]]
            assert torch.equal(p[: len(s.prefix)], embed_ids(lm.model, s.prefix, CPU))
            assert torch.equal(p[p.shape[0] - len(s.suffix) :], embed_ids(lm.model, s.suffix, CPU))
        evaluate(lm, examples, latent_prompt_maker(lm, il, run.prompt), run.prompt, ev)
        # text teacher (the KD cache's job)
        compute_teacher_topk(lm, examples, run.prompt, TeacherArgs(top_k=2, k_tokens=2, batch_size=2))
        # discrete comparators (the oracle's gold is keyed by the run's content text) and the
        # text-tuned ceiling's loss
        gold = {content_text(v, run.prompt): e["answers"] for v, e in zip(views, examples)}
        for name in ("lexical-4", "tail-4", "selfinfo-4", "oracle-4"):
            embeds = text_prompt_maker(lm, run.prompt, name, gold=gold)(views).embeds
            for v, e in zip(views, embeds):  # scaffold of the model's own prompt around 4 kept ids
                s = scaffold[v["question"]]
                assert torch.equal(e[: len(s.prefix)], embed_ids(lm.model, s.prefix, CPU))
                assert e.shape[0] == len(s.prefix) + 4 + len(s.suffix)
        tuned = TunedArgs(prompt=run.prompt)
        tuned_step(lm, tuned, text_prompt_maker(lm, run.prompt, "text"), examples[:2])
    # training: latent scaffold, gold answers and the on-the-fly KD teacher in one step
    params = il.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-3)
    train_step([lm], il, run, select_examples(TRAIN, EvalArgs(n_examples=0))[:2], params, opt)

    where = {(name, module) for name, module, *_ in calls}
    assert where >= {
        ("build_prompt", "latentwire.evaluation.baselines"),
        ("build_prompt", "latentwire.latent.prompts"),
        ("build_prompt", "latentwire.training.teacher"),
        ("answer_ids", "latentwire.evaluation.evaluate"),
        ("answer_ids", "latentwire.training.teacher"),
        ("answer_ids", "latentwire.training.step"),
        ("answer_ids", "latentwire.training.text_tuning"),
    }
    eos = prompt_mod.eos_id(tok, spec.eos_token)
    for name, module, args, result, a, kw in calls:
        assert to_dict(args) == to_dict(own), (name, module)  # the model's merged prompt, always
        assert a[3] is False  # the plain path
        if name == "answer_ids":
            assert result == prompt_mod.answer_ids(a[0], tok, own, False, eos)
            continue
        kind = a[4] if len(a) > 4 else kw.get("kind", "text")
        q = a[0]["question"]
        if kind == "text" and q in text_ids:
            assert result.ids == text_ids[q]
        elif kind == "latent" and q in scaffold:
            assert (result.prefix, result.suffix) == (scaffold[q].prefix, scaffold[q].suffix)
        else:  # a training example: compare with its own direct call
            assert result == build_prompt(a[0], tok, own, False, kind)


def _write_inputs(tmp_path, spec, cache):
    """A registry file with the base model's entry, and prepared train/test parquet files."""
    entry = {k: v for k, v in to_dict(spec).items() if k != "name"}
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": {spec.name: entry}}))
    paths = {}
    for split, frame in (("train", TRAIN), ("test", TEST)):
        paths[split] = tmp_path / f"{split}.parquet"
        frame.to_parquet(paths[split])
    return registry, paths


def test_baseline_cli_takes_shots_from_the_train_split_only(base, tmp_path):
    spec, _, cache = base
    registry, paths = _write_inputs(tmp_path, spec, cache)
    cfg = {"name": "text", "prompt": {}, "eval": {"n_examples": 2, "max_new_tokens": 3, "device": "cpu"}}

    def run(shots_from):
        args = argparse.Namespace(
            registry=str(registry),
            model=spec.name,
            manifest=str(cache / "manifest.json"),
            data=str(paths["test"]),
            config_json=json.dumps(cfg),
            shots_from=shots_from,
            windows=[],
            threads=0,
            predictions=str(tmp_path / "p.jsonl"),
            metrics=str(tmp_path / "m.json"),
        )
        return baseline_cli.run(args)

    assert run(str(paths["train"])) == 0
    prompt = json.loads((tmp_path / "m.json").read_text())["provenance"]["config"]["prompt"]
    ids = [s["id"] for s in prompt["shot_examples"]]
    assert prompt["style"] == "completion" and len(ids) == 2
    assert set(ids) <= set(TRAIN["id"]) and not set(ids) & set(TEST["id"])
    with pytest.raises(ValueError, match="train split only"):
        run(str(paths["test"]))  # the evaluation split can never provide shots
    with pytest.raises(ValueError, match="need the train split"):
        run(None)


def test_latent_cli_draws_shots_from_train_never_from_eval_data(base, tmp_path):
    spec, _, cache = base
    registry, paths = _write_inputs(tmp_path, spec, cache)
    run_cfg = json.dumps(to_dict(from_dict(LatentRunArgs, {"latent": LATENT}, "latent")))
    common = dict(
        registry=str(registry),
        models=[spec.name],
        manifests=[str(cache / "manifest.json")],
        config_json=run_cfg,
        exp="x",
        threads=0,
    )
    train_args = argparse.Namespace(**common, train=str(paths["train"]), validation=str(paths["test"]))
    run, _, resolved = latent_cli._setup(train_args)
    ids = [s["id"] for s in resolved["prompts"][spec.name]["shot_examples"]]
    assert len(ids) == 2 and set(ids) <= set(TRAIN["id"])
    eval_args = argparse.Namespace(**common, data=str(paths["test"]), shots_from=str(paths["train"]))
    run_eval, _, _ = latent_cli._setup(eval_args)
    assert run_eval.prompt.shot_examples == run.prompt.shot_examples  # training's shots at evaluation
    with pytest.raises(ValueError, match="train split only"):
        latent_cli._setup(
            argparse.Namespace(**common, data=str(paths["test"]), shots_from=str(paths["test"]))
        )
    with pytest.raises(ValueError, match="need the train split"):
        latent_cli._setup(argparse.Namespace(**common, data=str(paths["test"]), shots_from=None))


def test_the_plan_checks_each_models_merged_prompt(tmp_path):
    """A registry override that is only wrong once merged over the global prompt fails at parse
    time (``snakemake -n``), naming the model's key path."""
    from pathlib import Path

    from latentwire.config import ConfigError
    from latentwire.workflow import WorkflowPlan

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    registry = yaml.safe_load((repo / ".test" / "config" / "models.yaml").read_text())
    registry["models"]["tiny-llama"]["prompt"] = {"style": "completion", "shots": 2}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(registry))
    cfg["registry"] = str(tmp_path / "models.yaml")
    WorkflowPlan.from_config(cfg)  # a valid override
    bad = {"user_template": "Q: {question}\n{content}"}  # {question} needs the global replaces=context
    registry["models"]["tiny-llama"]["prompt"] = bad
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(registry))
    with pytest.raises(ConfigError, match=r"models\.tiny-llama\.prompt\.user_template: \{question\} only"):
        WorkflowPlan.from_config(cfg)
    cfg["prompt"] = {"replaces": "context", "content_template": "Context: {context}"}
    cfg["prompt"]["user_template"] = "{content}\nQ: {question}"
    WorkflowPlan.from_config(cfg)  # valid over this global prompt


SELECT = {
    "n_shared": 4,
    "n_private": 0,
    "encoder": {"name": "select", "source_layer": 1, "d_z": 16, "n_heads": 2, "select_hidden": 16},
    "adapter": {"kind": "mlp", "hidden": 32, "dropout": 0.0},
}


def _select_windows(base, tmp_path, registry, paths) -> tuple[LatentRunArgs, dict[str, str]]:
    """A select experiment on the base model (its own source model), a checkpoint of its untrained
    modules, and ``select-windows`` run over the train and test splits: (run with its shots attached,
    split -> windows file)."""
    from safetensors.torch import save_file

    spec, lm, cache = base
    latent = {**SELECT, "encoder": {**SELECT["encoder"], "source_model": spec.name}}
    run = from_dict(LatentRunArgs, {"latent": latent, "eval": {"device": "cpu"}}, "latent")
    torch.manual_seed(0)
    il = build_interlingua(run.latent, [lm], CPU)
    ckpt = tmp_path / "best.safetensors"
    save_file({k: v.contiguous() for k, v in il.trainable_state_dict().items()}, str(ckpt))
    files = {}
    for split in ("train", "test"):
        files[split] = str(tmp_path / f"windows-{split}.jsonl")
        args = argparse.Namespace(
            registry=str(registry),
            manifest=str(cache / "manifest.json"),
            config_json=json.dumps(to_dict(run)),
            n_models=1,
            checkpoint=str(ckpt),
            data=str(paths[split]),
            eval_json="",
            threads=0,
            out=files[split],
        )
        assert windows_cli.run(args) == 0
    # the records are keyed by the run's content text, the very texts the latent's encoder reads
    views = [model_view(e) for e in select_examples(TEST, EvalArgs(n_examples=0))]
    records = read_jsonl(files["test"])
    run.prompt = attach_shots(run.prompt, [spec], TRAIN)  # as eval-latent resolves it
    encoded = []
    real_encode = il.encode
    il.encode = lambda texts, **kw: encoded.extend(texts) or real_encode(texts, **kw)
    with torch.no_grad():
        latent_prompt_maker(lm, il, run.prompt)(views)
    assert [r["text"] for r in records] == encoded == [content_text(v, run.prompt) for v in views]
    kept = il.encoder.kept_tokens(encoded)
    assert [r["ids"] for r in records] == [k["ids"] for k in kept]
    return run, files


def test_comparators_and_select_windows_use_the_models_prompt(base, calls, monkeypatch, tmp_path):
    """selfinfo conditions on the model's own prefix (shots included) and select-text puts the
    select checkpoint's kept ids between the model's own scaffold, looked up by the run's content
    text (the model's own content template differs)."""
    spec, lm, cache = base
    tok = lm.tokenizer
    registry, paths = _write_inputs(tmp_path, spec, cache)
    run, files = _select_windows(base, tmp_path, registry, paths)
    own = prompt_for(spec, run.prompt)
    assert own.content_template != run.prompt.content_template  # keys must be the run's text
    views = [model_view(e) for e in select_examples(TEST, EvalArgs(n_examples=0))]
    surprisal = []
    real = comparators_mod.content_surprisal

    def spy(model, prefix, content):
        surprisal.append((prefix, content))
        return real(model, prefix, content)

    monkeypatch.setattr(comparators_mod, "content_surprisal", spy)
    windows = load_windows([files["test"]])
    with torch.no_grad():
        selfinfo = text_prompt_maker(lm, run.prompt, "selfinfo-4")(views).embeds
        made = text_prompt_maker(lm, run.prompt, "select-text-4", windows)(views)
        select, facts = made.embeds, made.facts
    for v, e_self, e_sel, (prefix, content) in zip(views, selfinfo, select, surprisal):
        full = build_prompt(v, tok, own, False, "text")
        assert (prefix, content) == (full.prefix, full.content)  # the model's own scaffold and content
        kept = windows[content_text(v, run.prompt)]["ids"][:4]  # the source model is the receiver
        assert torch.equal(e_sel, embed_ids(lm.model, full.prefix + kept + full.suffix, CPU))
        assert e_self.shape[0] == len(full.prefix) + 4 + len(full.suffix)
    assert all(f["content_positions"] == 4 for f in facts)
    assert calls and all(to_dict(args) == to_dict(own) for _, _, args, *_ in calls)


def test_tuned_ceilings_use_the_models_prompt_and_train_shots(base, calls, tmp_path, capsys):
    """tune-text and eval-tuned (select-text-4) build every input with the model's merged prompt and
    its shots from the train split; eval-tuned refuses shots from any other split (a one-line error)."""
    spec, lm, cache = base
    registry, paths = _write_inputs(tmp_path, spec, cache)
    run, files = _select_windows(base, tmp_path, registry, paths)
    own = prompt_for(spec, run.prompt)
    run.prompt.shot_examples = []  # the workflow's tuned config carries no shots: the CLIs draw them
    train = TrainArgs(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_every=2, val_examples=2)
    cfg = TunedArgs("select-text-4", LoraArgs(rank=2, first_layers=1), train=train, prompt=run.prompt)
    cfg.eval = EvalArgs(n_examples=0, batch_size=2, max_new_tokens=3, device="cpu")
    common = ["--registry", str(registry), "--model", spec.name, "--manifest",
              str(cache / "manifest.json"), "--config-json", json.dumps(to_dict(cfg))]  # fmt: skip
    out = tmp_path / "tuned"
    assert main(["tune-text", *common, "--windows", files["train"], files["test"], "--train",
                 str(paths["train"]), "--validation", str(paths["test"]), "--out-dir", str(out)]) == 0  # fmt: skip
    evaluate_args = ["eval-tuned", *common, "--windows", files["test"], "--checkpoint",
                     str(out / "best.safetensors"), "--data", str(paths["test"]),
                     "--predictions", str(tmp_path / "p.jsonl"), "--metrics", str(tmp_path / "m.json")]  # fmt: skip
    assert main([*evaluate_args, "--shots-from", str(paths["train"])]) == 0
    prompt = json.loads((tmp_path / "m.json").read_text())["provenance"]["config"]["prompt"]
    assert prompt == to_dict(own)  # the recorded prompt is the one that ran
    assert {s["id"] for s in prompt["shot_examples"]} <= set(TRAIN["id"])
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["provenance"]["config"]["prompt"] == to_dict(own)

    where = {(name, module) for name, module, *_ in calls}
    assert where >= {
        ("build_prompt", "latentwire.evaluation.baselines"),
        ("answer_ids", "latentwire.evaluation.evaluate"),
        ("answer_ids", "latentwire.training.text_tuning"),
    }
    windows = load_windows([files["train"], files["test"]])
    for name, module, args, result, a, kw in calls:
        assert to_dict(args) == to_dict(own), (name, module)
        if name == "build_prompt":  # the model's scaffold (and content) of one direct call
            kind = a[4] if len(a) > 4 else kw.get("kind", "text")
            assert result == build_prompt(a[0], lm.tokenizer, own, False, kind)
            if module == "latentwire.evaluation.baselines":  # select-text: the run's content text's window
                assert content_text(a[0], run.prompt) in windows
    capsys.readouterr()
    assert main([*evaluate_args, "--shots-from", str(paths["test"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train split only" in err[0] and "Traceback" not in err[0], err
    assert main(evaluate_args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need the train split (--shots-from)" in err[0], err
