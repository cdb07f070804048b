"""The teacher-logit cache: equal to a fresh top-k of the text teacher, keyed by example id, checked
against the run that reads it, and written by ``latentwire teacher-logits`` with provenance."""

import json

import pandas as pd
import pytest
import torch
import yaml

from latentwire.batching import collate
from latentwire.cli.main import main
from latentwire.data.prepare import write_splits
from latentwire.models import materialize
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id
from latentwire.scoring import answer_logits
from latentwire.training.losses import TopKTeacher, kd_loss, topk_kd_loss
from latentwire.training.teacher import (
    TeacherArgs,
    TeacherCache,
    compute_teacher_topk,
    prompt_hash,
    save_teacher_cache,
)

PROMPT = PromptArgs()
CITIES = [("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"), ("Madrid", "Spain")]
# answers of different lengths, one longer than K, so padding past the end is exercised
EXAMPLES = [
    {
        "id": f"q{i}",
        "question": f"What is the capital of {country}?",
        "context": f"{city} is the capital and largest city of {country}.",
        "answers": [city if i % 2 else f"the city of {city} on the river"],
    }
    for i, (city, country) in enumerate(CITIES)
]


def fresh_logits(lm, examples, prompt=PROMPT):
    """The text teacher written out by hand, as training's on-the-fly KD did: (B, A, V), golds."""
    tok, chat = lm.tokenizer, lm.uses_chat_template
    eos = eos_id(tok, lm.spec.eos_token)
    golds = [answer_ids(e["answers"][0], tok, prompt, chat, eos) for e in examples]
    text = [build_prompt(e, tok, prompt, chat, "text").ids for e in examples]
    embeds = [lm.model.get_input_embeddings()(torch.tensor(t)) for t in text]
    with torch.no_grad():
        return answer_logits(lm.model, collate(lm.model, embeds, golds)), golds


def test_cache_is_the_top_k_of_a_fresh_teacher_forward(tiny_lm):
    K, k = 7, 8  # the tiny tokenizer spells short words nearly byte by byte
    logits, golds = fresh_logits(tiny_lm, EXAMPLES)  # (B, A, V)
    assert max(map(len, golds)) > K > min(map(len, golds))
    top = logits[:, :K].topk(k, dim=-1)
    # one batch holding every example: the same forward as the fresh one, so equal exactly
    got = compute_teacher_topk(tiny_lm, EXAMPLES, PROMPT, TeacherArgs(top_k=k, k_tokens=K, batch_size=4))
    assert got["values"].shape == (4, K, k) and got["values"].dtype == torch.float16
    assert got["indices"].dtype == torch.int32 and got["answer_ids"].dtype == torch.int32
    for i, g in enumerate(golds):
        n = min(len(g), K)
        assert torch.equal(got["values"][i, :n], top.values[i, :n].half())
        assert torch.equal(got["indices"][i, :n], top.indices[i, :n].int())
        assert got["answer_ids"][i].tolist() == g[:K] + [-100] * (K - n)
        assert not got["values"][i, n:].any()  # past the answer's end: zeros
    # another batching only changes the padding: equal up to float16 rounding
    one = compute_teacher_topk(tiny_lm, EXAMPLES, PROMPT, TeacherArgs(top_k=k, k_tokens=K, batch_size=1))
    torch.testing.assert_close(one["values"].float(), got["values"].float(), atol=2e-3, rtol=1e-3)
    assert torch.equal(one["answer_ids"], got["answer_ids"])


def test_full_vocabulary_cache_gives_the_full_kd_loss(tiny_lm):
    """k = V: the top-k KD on the cache equals kd_loss on the fresh logits (float16 rounding aside)."""
    logits, golds = fresh_logits(tiny_lm, EXAMPLES)
    V = logits.shape[-1]
    got = compute_teacher_topk(tiny_lm, EXAMPLES, PROMPT, TeacherArgs(top_k=V + 10, k_tokens=4))
    assert got["values"].shape[-1] == V  # clipped to the vocabulary
    student = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([g + [-100] * (logits.shape[1] - len(g)) for g in golds])
    teacher = TopKTeacher(got["values"], got["indices"].long())
    want = kd_loss(student, logits, ids, tau=2.0, k=4).item()
    assert topk_kd_loss(student, teacher, ids, tau=2.0, k=4).item() == pytest.approx(want, rel=1e-3)


def test_saved_cache_is_looked_up_by_id_and_checked(tiny_lm, tmp_path):
    K = 3
    got = compute_teacher_topk(tiny_lm, EXAMPLES, PROMPT, TeacherArgs(top_k=5, k_tokens=K))
    meta = {"model": tiny_lm.spec.name, "k_tokens": K, "top_k": 5, "prompt_hash": prompt_hash(PROMPT)}
    path = tmp_path / "train.safetensors"
    save_teacher_cache(path, got, [e["id"] for e in EXAMPLES], meta, tmp_path / "train.json", {"x": 1})
    assert json.loads((tmp_path / "train.json").read_text()) == {**meta, "provenance": {"x": 1}}
    cache = TeacherCache(path)
    cache.check(tiny_lm.spec.name, PROMPT, k_tokens=2)
    _, golds = fresh_logits(tiny_lm, EXAMPLES)
    order = [2, 0, 3]  # any order, looked up by id
    t = cache.lookup([f"q{i}" for i in order], [golds[i] for i in order], torch.device("cpu"))
    assert torch.equal(t.values, got["values"][order]) and t.indices.dtype == torch.long
    assert torch.equal(t.indices, got["indices"][order].long())
    with pytest.raises(KeyError, match="q9"):
        cache.lookup(["q9"], [golds[0]], torch.device("cpu"))
    with pytest.raises(ValueError, match="gold answer ids differ"):
        cache.lookup(["q0"], [golds[1]], torch.device("cpu"))
    with pytest.raises(ValueError, match="prompt contract"):
        cache.check(tiny_lm.spec.name, PromptArgs(answer_prefix="A:"), k_tokens=2)
    with pytest.raises(ValueError, match="not 'other'"):
        cache.check("other", PROMPT, k_tokens=2)
    with pytest.raises(ValueError, match="KD needs 4"):
        cache.check(tiny_lm.spec.name, PROMPT, k_tokens=4)
    with pytest.raises(ValueError, match="unique example id"):
        save_teacher_cache(tmp_path / "dup.safetensors", got, ["a", "a", "b", "c"], meta)


def test_cli_writes_the_cache_and_its_provenance(make_local_spec, tiny_dir, tmp_path):
    registry = tmp_path / "models.yaml"
    entry = {"family": "tiny", "source": {"kind": "local", "path": str(tiny_dir)}, "context_limit": 1024}
    registry.write_text(yaml.safe_dump({"models": {"tiny": entry}}))
    materialize(make_local_spec("tiny", tiny_dir, context_limit=1024), tmp_path / "cache")
    frame = pd.DataFrame(
        [{**e, "title": e["id"], "split": "train", "dataset": "toy"} for e in EXAMPLES],
        columns=["id", "question", "context", "answers", "title", "split", "dataset"],
    )
    (data,) = write_splits({"train": frame}, tmp_path / "data", {})
    cfg = {"teacher": {"top_k": 4, "k_tokens": 2, "batch_size": 3}, "prompt": {}, "device": "cpu"}
    out, meta = tmp_path / "t" / "train.safetensors", tmp_path / "t" / "train.json"
    argv = ["teacher-logits", "--registry", str(registry), "--model", "tiny"]
    argv += ["--manifest", str(tmp_path / "cache" / "manifest.json"), "--data", str(data)]
    argv += ["--config-json", json.dumps(cfg), "--out", str(out), "--meta", str(meta)]
    assert main(argv) == 0
    m = json.loads(meta.read_text())
    assert {k: m[k] for k in ("model", "split", "n_examples", "top_k", "k_tokens")} == {
        "model": "tiny",
        "split": "train",
        "n_examples": 4,
        "top_k": 4,
        "k_tokens": 2,
    }
    assert m["prompt_hash"] == prompt_hash(PROMPT) and "git_revision" in m["provenance"]
    cache = TeacherCache(out)
    assert sorted(cache.rows) == ["q0", "q1", "q2", "q3"] and cache.values.shape == (4, 2, 4)
    cache.check("tiny", PROMPT, k_tokens=2)
