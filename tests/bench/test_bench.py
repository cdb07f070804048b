"""The throughput harness on CPU with tiny shapes: every phase runs, the JSON is complete and sane,
the hero configs have the published sizes, and bad settings fail naming the key."""

import contextlib
import io
import json
import math

import pytest
import torch

from latentwire.bench import BenchArgs
from latentwire.bench.train import _ceiling_pass
from latentwire.cli.bench import load_bench_args
from latentwire.cli.main import main
from latentwire.config import ConfigError, from_dict
from latentwire.models.synthetic import (
    build_bench_tokenizer,
    build_random_receiver,
    receiver_config,
    synthetic_examples,
)
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id
from latentwire.training.args import LatentRunArgs

CPU = torch.device("cpu")
TINY = {
    "shapes": "tiny",
    "batch_size": 4,
    "slots": 6,
    "answer_tokens": 5,
    "text_tokens": 100,
    "decode_tokens": 3,
    "eval_batch_sizes": [1, 6],
    "warmup": 1,
    "iters": 2,
    "profile_steps": 1,
    "run": {
        "latent": {
            "n_private": 2,
            "encoder": {"name": "byte", "d_z": 32, "n_heads": 4, "n_layers": 1, "max_bytes": 256},
            "adapter": {"hidden": 64},
        },
        "loss": {"w_ktoken": 0.5},
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One CLI run on tiny shapes: (result JSON, printed summary)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "--config-json", json.dumps(TINY), "--out", str(out)]) == 0
    return json.loads(out.read_text()), buf.getvalue()


def test_hero_configs_have_the_published_sizes():
    """Parameter counts of Llama-3.1-8B and Qwen2.5-7B, counted on the meta device (instant)."""
    from transformers import AutoModelForCausalLM

    expected = {
        "llama": ("llama-3.1-8b", 8_030_261_248, 4096, 32),
        "qwen2": ("qwen2.5-7b", 7_615_616_512, 3584, 28),
    }
    for family, (name, n_params, width, layers) in expected.items():
        got_name, cfg = receiver_config(family, "hero", vocab_size=1000)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        assert got_name == name
        assert sum(p.numel() for p in model.parameters()) == n_params, name
        assert (cfg.hidden_size, cfg.num_hidden_layers) == (width, layers)
        assert not cfg.tie_word_embeddings
    assert receiver_config("llama", "hero", 1000)[1].rope_parameters["rope_theta"] == 500000.0
    assert receiver_config("qwen2", "hero", 1000)[1].num_key_value_heads == 4
    with pytest.raises(ValueError, match="200000 ids"):
        receiver_config("llama", "hero", vocab_size=200_000)


def test_default_configs_have_the_exports_sizes():
    """The embedded default's receivers as their exports' config.json: names the registry uses, sizes."""
    from transformers import AutoModelForCausalLM

    expected = {  # parameters of the float32 exports (Qwen's GGUF head is untied: + 136M)
        "llama": ("smollm2-135m", 134_515_008, 576, 30, True),
        "qwen2": ("qwen2.5-coder-0.5b", 630_167_424, 896, 24, False),
    }
    for family, (name, n_params, width, layers, tied) in expected.items():
        got_name, cfg = receiver_config(family, "default", vocab_size=1000)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        assert got_name == name
        assert sum(p.numel() for p in model.parameters()) == n_params, name
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.tie_word_embeddings) == (width, layers, tied)


PRETRAIN = {
    "shapes": "tiny",
    "phases": ["pretrain"],
    "slots": 8,
    "warmup": 1,
    "iters": 2,
    "profile_steps": 1,
    "run": {
        "latent": {
            "n_shared": 8,
            "n_private": 0,
            "encoder": {
                "name": "pooled-lm",
                "source_model": "tiny-qwen2",
                "d_z": 64,
                "drop_last": 0,
                "pool_factor": 4,
                "max_enc_tokens": 32,
            },
            "adapter": {"kind": "linear2", "hidden": 32},
        }
    },
    "pretrain": {
        "batch_size": 3,
        "max_segment_words": 20,
        "continuation_share": 0.5,
        "continuation_tokens": 6,
        "reconstruct_tokens": 12,
    },
}


def test_pretrain_phase_times_the_real_step_and_counts_its_work(tmp_path):
    """Phase "pretrain": pretrain_step through both receivers, its profiled regions, and the work
    count, checked against a hand count of the same step's batch."""
    from latentwire.bench.pretrain import synthetic_contexts
    from latentwire.training.pretrain import PretrainArgs, draw_batch, step_rng

    out = tmp_path / "pt.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "--config-json", json.dumps(PRETRAIN), "--out", str(out)]) == 0
    pt = json.loads(out.read_text())["pretrain"]
    assert 0 < pt["all"]["median_ms"] and pt["all"]["samples_per_min"] == pytest.approx(
        3 * 60_000 / pt["all"]["median_ms"]
    )
    assert pt["record"]["step"] == 3  # one warm-up + two timed steps
    for m in ("tiny-llama", "tiny-qwen2"):
        assert math.isfinite(pt["record"][m]["loss"])
    want = {"encode", "encoder_backward", "update"} | {
        f"{p}:tiny-{m}" for p in ("forward", "backward") for m in ("llama", "qwen2")
    }
    assert want <= set(pt["profile"]["regions"])
    # the work of the last timed step (index 2), counted here by hand
    a = from_dict(PretrainArgs, PRETRAIN["pretrain"], where="pretrain")
    ctx = synthetic_contexts(64, 30, 0)
    segs, targets, tasks = draw_batch(ctx, a, step_rng(a, 2), 3)
    tok = build_bench_tokenizer(PromptArgs())
    n_enc = sum(min(len(tok(s, add_special_tokens=False)["input_ids"]), 32) for s in segs)
    w = pt["work"]
    assert w["encoder_tokens"] == n_enc
    cue = len(tok(a.reconstruct_cue, add_special_tokens=False)["input_ids"])
    for m in ("tiny-llama", "tiny-qwen2"):
        lens = [
            len(tok(t, add_special_tokens=False)["input_ids"][: 6 if k == "continuation" else 12]) or 1
            for t, k in zip(targets, tasks)
        ]
        row = max(8 + (cue if k == "reconstruction" else 0) + n for k, n in zip(tasks, lens))
        assert w["receivers"][m]["positions"] == 3 * row
        assert w["receivers"][m]["answer_columns"] == max(lens) + 1
    assert w["flops"] == w["encoder_flops"] + sum(r["flops"] for r in w["receivers"].values())
    assert pt["timed_flops"] > w["flops"]  # two timed steps
    assert pt["achieved_tflops"] == pytest.approx(
        pt["timed_flops"] / sum(pt["all"]["times_ms"]) * 1000 / 1e12
    )
    assert "pretrain" in buf.getvalue() and "TFLOPS" in buf.getvalue()


def test_synthetic_examples_fill_the_text_prompt_and_answer_lengths():
    pa = PromptArgs()
    tok = build_bench_tokenizer(pa)
    examples = synthetic_examples(tok, pa, True, n=6, text_tokens=320, answer_tokens=16, seed=1)
    eos = eos_id(tok)
    for e in examples:
        n = len(build_prompt(e, tok, pa, True, "text").ids)
        assert 315 <= n <= 320, n  # as many filler words as fit
        assert len(answer_ids(e["answers"][0], tok, pa, True, eos)) == 16
        assert e["context"].startswith(e["answers"][0])  # extractive: the answer is in the context
    latent = build_prompt(examples[0], tok, pa, True, "latent")
    # the tokenizer knows the scaffold's words: ~one token per word, as real tokenizers do
    assert len(latent.prefix) + len(latent.suffix) < 80
    assert len({e["context"] for e in examples}) == 6
    with pytest.raises(ValueError, match="text_tokens=20"):
        synthetic_examples(tok, pa, True, n=1, text_tokens=20, answer_tokens=4)
    # answer_spread: padded batches, answer lengths from A - spread to A
    spread = synthetic_examples(tok, pa, True, n=12, text_tokens=120, answer_tokens=8, answer_spread=3)
    lengths = {len(answer_ids(e["answers"][0], tok, pa, True, eos)) for e in spread}
    assert lengths <= {5, 6, 7, 8} and len(lengths) > 1


def test_bench_json_has_every_section(bench_run):
    result, printed = bench_run
    names = ["tiny-llama", "tiny-qwen2"]
    assert result["device"]["type"] == "cpu" and result["dtype"] == "float32"
    assert result["settings"]["batch_size"] == 4 and result["settings"]["run"]["latent"]["n_shared"] == 4
    assert sorted(result["models"]) == names
    assert {"config", "git_revision", "packages"} <= set(result["provenance"])
    for phase in ("ceiling", "ceiling_full_prompt", "step"):
        row = result[phase]["all"]
        assert 0 < row["median_ms"] <= row["p90_ms"] and len(row["times_ms"]) == 2
        assert row["samples_per_min"] == pytest.approx(4 * 60_000 / row["median_ms"])
    assert all(result["ceiling"][n]["median_ms"] > 0 for n in names)
    record = result["step"]["record"]
    for n in names:  # the real step ran with every enabled loss
        assert {"loss", "answer", "first", "ktoken"} <= set(record[n]) and math.isfinite(record[n]["loss"])
    for n in names:
        lay = result["layout"]["per_model"][n]
        assert lay["latent_prompt_tokens"] == lay["scaffold_tokens"] + 6
        assert 0 < lay["cached_scaffold_tokens"] < lay["scaffold_tokens"]
        assert lay["text_prompt_tokens_max"] <= 100 and lay["answer_tokens_max"] == 5
        ev = result["eval"][n]
        assert ev["text"]["prompt_tokens"] == lay["text_prompt_tokens_max"]
        assert ev["latent"]["prompt_tokens"] == lay["latent_prompt_tokens"]
        for kind in ("text", "latent"):  # the scaffold head is read from the cache, not computed
            assert ev[kind]["prefill_columns"] == ev[kind]["prompt_tokens"] - lay["cached_scaffold_tokens"]
        for kind in ("text", "latent"):
            for part in ("prepare", "prefill", "prepare_plus_prefill", "decode_per_token"):
                assert ev[kind][part]["median_ms"] > 0, (n, kind, part)
    for b in ("1", "6"):  # end to end (prompt building with the encoder + prefill) at other batch sizes
        for n in names:
            e2e = result["eval_by_batch"][b][n]
            assert e2e["latent"]["prepare_plus_prefill"]["samples_per_min"] > 0
            assert e2e["latent"]["prompt_tokens"] == lay["latent_prompt_tokens"]
    ratios = result["ratios"]
    for key in ("step_over_ceiling", "text_over_latent_prefill", "text_over_latent_prefill_with_prepare"):
        assert math.isfinite(ratios[key]) and ratios[key] > 0, key
    assert ratios["step_over_ceiling"] == pytest.approx(
        result["ceiling"]["all"]["median_ms"] / result["step"]["all"]["median_ms"]
    )
    assert ratios["step_over_full_prompt_ceiling"] == pytest.approx(
        result["ceiling_full_prompt"]["all"]["median_ms"] / result["step"]["all"]["median_ms"]
    )
    assert ratios["text_over_latent_prefill"] == min(ratios["text_over_latent_prefill_per_model"].values())
    assert set(result["targets"]) == {"step_over_ceiling", "step_samples_per_min", "text_over_latent_prefill"}
    assert result["targets"]["step_samples_per_min"]["value"] == result["step"]["all"]["samples_per_min"]
    assert result["compiled"] is False and "compile_s" not in result  # compile: auto is off on CPU
    for row in (result["ceiling"]["all"], result["step"]["all"]):  # the warm-up calls are kept
        assert len(row["warmup_ms"]) == result["settings"]["warmup"] and "first_call_overhead_s" in row
    assert "step_over_ceiling" in printed and "tiny-qwen2" in printed


def test_the_whole_row_ceiling_can_be_left_out(tmp_path):
    cfg = {**TINY, "phases": ["ceiling", "step"], "profile_steps": 0, "full_prompt_ceiling": False}
    out = tmp_path / "bench.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["bench", "--config-json", json.dumps(cfg), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "ceiling_full_prompt" not in result and result["ceiling"]["all"]["median_ms"] > 0
    assert (
        "step_over_full_prompt_ceiling" not in result["ratios"] and result["ratios"]["step_over_ceiling"] > 0
    )


def test_step_profile_names_every_region_of_the_step(bench_run):
    prof = bench_run[0]["step"]["profile"]
    assert prof["steps"] == 1 and prof["wall_ms_per_step"] > 0
    regions = set(prof["regions"])
    want = {"encode", "encoder_backward", "update"}
    want |= {f"{p}:tiny-{m}" for p in ("forward", "backward") for m in ("llama", "qwen2")}
    assert want <= regions, regions
    assert all(r["host_ms"] > 0 for r in prof["regions"].values())
    assert prof["top_ops"] and all(o["calls_per_step"] > 0 for o in prof["top_ops"])
    assert not any(o["op"].startswith(("forward:", "encode")) for o in prof["top_ops"])  # ops, not regions


def test_ceiling_sends_gradients_to_the_leaf_only():
    run = from_dict(LatentRunArgs, TINY["run"], where="latent")
    tok = build_bench_tokenizer(run.prompt)
    lm = build_random_receiver("qwen2", "tiny", tok, CPU, torch.float32)
    examples = synthetic_examples(tok, run.prompt, True, n=2, text_tokens=100, answer_tokens=4)
    for minimal in (True, False):
        _ceiling_pass(lm, run, examples, slots=6, minimal=minimal)()
        assert all(p.grad is None and not p.requires_grad for p in lm.model.parameters())


def test_minimal_ceiling_gives_the_whole_rows_answer_loss():
    """The minimal ceiling's columns after the cached head compute what the whole row computes."""
    from latentwire.batching import Batch, pad_answers
    from latentwire.bench.layout import gold_ids, scaffold_head
    from latentwire.kv_prefix import with_prefix
    from latentwire.scaffold_cache import scaffold_prefix
    from latentwire.scoring import answer_logits

    run = from_dict(LatentRunArgs, TINY["run"], where="latent")
    tok = build_bench_tokenizer(run.prompt)
    lm = build_random_receiver("llama", "tiny", tok, CPU, torch.float32)
    examples = synthetic_examples(tok, run.prompt, True, n=2, text_tokens=100, answer_tokens=4)
    head = scaffold_head(lm, run, examples)
    gold = pad_answers(gold_ids(lm, run, examples), CPU)
    B, A = gold.shape
    emb = lm.model.get_input_embeddings()
    rest = torch.randn(B, 9 + A, emb.weight.shape[1]) * 0.02  # 9 columns after the head, then answers
    whole = torch.cat([emb(torch.tensor(head)).expand(B, -1, -1), rest], 1)
    with torch.no_grad():
        pos = torch.arange(whole.shape[1]).expand(B, -1)
        full = answer_logits(lm.model, Batch(whole, None, pos, len(head) + 9, gold))
        part = Batch(rest, torch.ones(B, 9 + A, dtype=torch.long), torch.arange(9 + A).expand(B, -1), 9, gold)
        part, kw = with_prefix(lm.model, part, scaffold_prefix(lm.model, head, B))
        torch.testing.assert_close(answer_logits(lm.model, part, **kw), full, rtol=1e-4, atol=1e-4)


def test_nf4_needs_cuda():
    tok = build_bench_tokenizer(PromptArgs())
    with pytest.raises(ValueError, match="nf4"):
        build_random_receiver("llama", "tiny", tok, CPU, torch.float32, nf4=True)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"batchsize": 8}, "bench.batchsize"),
        ({"iters": "5"}, "bench.iters"),
        ({"shapes": "huge"}, "bench.shapes"),
        ({"models": ["llama", "mistral"]}, "bench.models[1]"),
        ({"run": {"latent": {"encoder": {"nme": "byte"}}}}, "bench.run.latent.encoder.nme"),
        ({"slots": 8}, "slots"),  # must exceed n_private (8 by default)
        ({"answer_tokens": 1}, "answer_tokens"),
        ({"answer_tokens": 4, "answer_spread": 3}, "answer_spread"),
        ({"phases": ["step", "step"]}, "phases"),
        ({"profile_steps": -1}, "profile_steps"),
    ],
)
def test_bad_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_bench_args(None, json.dumps(override))


def test_yaml_then_json_merge_nested_keys(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("batch_size: 8\nrun:\n  latent:\n    n_private: 2\n    encoder: {name: byte}\n")
    cfg = load_bench_args(str(path), json.dumps({"run": {"latent": {"encoder": {"d_z": 64}}}}))
    assert cfg.batch_size == 8 and cfg.run.latent.n_private == 2
    assert (cfg.run.latent.encoder.name, cfg.run.latent.encoder.d_z) == ("byte", 64)
    with pytest.raises(ConfigError, match="--config-json"):
        load_bench_args(None, "{not json")
    assert isinstance(from_dict(BenchArgs, {}, where="bench"), BenchArgs)


def test_compile_auto_is_on_for_cuda_only():
    from latentwire.bench.args import resolve_compile

    assert resolve_compile(None, torch.device("cuda")) is True
    assert resolve_compile(None, CPU) is False
    assert resolve_compile(False, torch.device("cuda")) is False and resolve_compile(True, CPU) is True
