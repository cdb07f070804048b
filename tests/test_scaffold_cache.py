"""Scaffold cache: logits equal the full forward's, entries follow the weights, no cache for a
receiver that trains, one computation broadcast over the batch."""

import pytest
import torch

from latentwire.batching import collate, embed_ids
from latentwire.generation import generate_and_score
from latentwire.kv_prefix import with_prefix
from latentwire.scaffold_cache import _CACHES, scaffold_prefix, shared_scaffold, usable
from latentwire.scoring import answer_logits

SCAFFOLD = [5, 9, 11, 3, 17, 2]  # the constant prompt head (P = 6)
ROWS = [[21, 22, 23, 24, 25], [30, 31]]  # content + suffix per row (different lengths: left padding)
ANSWERS = [[40, 41, 42], [43, 44]]


def _logits(lm, cached: bool) -> torch.Tensor:
    model, dev = lm.model, lm.device
    if cached:
        prompts = [embed_ids(model, r, dev) for r in ROWS]
        prefix = scaffold_prefix(model, SCAFFOLD, len(ROWS))
        assert prefix is not None and prefix.length == len(SCAFFOLD)
    else:
        prompts = [embed_ids(model, SCAFFOLD + r, dev) for r in ROWS]
        prefix = None
    with torch.no_grad():
        batch, kw = with_prefix(model, collate(model, prompts, ANSWERS), prefix)
        return answer_logits(model, batch, **kw)  # (B, A, V)


def test_cached_scaffold_gives_the_full_forwards_logits(tiny_lm):
    full, cached = _logits(tiny_lm, False), _logits(tiny_lm, True)
    real = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # answer padding aside
    torch.testing.assert_close(cached[real], full[real], rtol=1e-4, atol=1e-4)


def test_generation_from_the_cached_scaffold_matches(tiny_lm):
    model, dev = tiny_lm.model, tiny_lm.device
    answers = torch.tensor([[40, 41, 42], [43, 44, -100]])
    runs = []
    for prefix, rows in ((None, [SCAFFOLD + r for r in ROWS]), (scaffold_prefix(model, SCAFFOLD, 2), ROWS)):
        batch, kw = with_prefix(model, collate(model, [embed_ids(model, r, dev) for r in rows]), prefix)
        runs.append(generate_and_score(model, batch, 6, {0}, answers=answers, **kw))
    assert runs[0].tokens == runs[1].tokens
    torch.testing.assert_close(runs[1].answer_logits, runs[0].answer_logits, rtol=1e-4, atol=1e-4)


def test_one_computation_broadcast_and_recomputed_when_weights_change(tiny_lm):
    model = tiny_lm.model
    _CACHES.pop(model, None)
    a = scaffold_prefix(model, SCAFFOLD, 4)
    assert a.keys[0].shape[0] == 4 and a.keys[0].stride(0) == 0  # views of one row, no copy
    assert scaffold_prefix(model, SCAFFOLD, 2).keys[0].data_ptr() == a.keys[0].data_ptr()  # memoized
    w = model.get_input_embeddings().weight
    with torch.no_grad():
        w[SCAFFOLD[0]] += 1.0  # an in-place update (as an optimizer step or a checkpoint load)
    try:
        b = scaffold_prefix(model, SCAFFOLD, 2)
        assert not torch.equal(b.keys[0][0], a.keys[0][0])
    finally:
        with torch.no_grad():
            w[SCAFFOLD[0]] -= 1.0


def test_no_cache_for_a_receiver_that_trains(tiny_lm):
    model = tiny_lm.model
    p = next(model.parameters())
    p.requires_grad_(True)
    try:
        assert not usable(model) and scaffold_prefix(model, SCAFFOLD, 2) is None
        with torch.no_grad():  # evaluation of a trained LoRA receiver may still cache
            assert usable(model)
    finally:
        p.requires_grad_(False)


@pytest.mark.parametrize(
    "prefixes, shared",
    [([[1, 2], [1, 2]], [1, 2]), ([[1, 2], [1, 3]], None), ([[], []], None), ([], None)],
)
def test_shared_scaffold_only_when_every_row_agrees(prefixes, shared):
    assert shared_scaffold(prefixes) == shared


def test_text_baselines_read_the_cached_head_and_keep_their_facts(tiny_lm):
    from latentwire.evaluation.baselines import text_prompt_maker
    from latentwire.prompt import PromptArgs
    from latentwire.scaffold_cache import scaffold_cache_off

    views = [
        {"question": "Who won?", "context": "Denver Broncos defeated the Carolina Panthers."},
        {"question": "Where is Paris?", "context": "Paris is in France."},
    ]
    maker = text_prompt_maker(tiny_lm, PromptArgs(), "budget-4")
    with scaffold_cache_off():
        made = maker(views)
        whole, facts_whole, none = made.embeds, made.facts, made.prefix
    made = maker(views)
    rest, facts, prefix = made.embeds, made.facts, made.prefix
    assert none is None and prefix is not None and facts == facts_whole
    for w, r in zip(whole, rest):
        assert torch.equal(w[prefix.length :], r)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "smollm2-135m"])
def test_packaged_models_score_the_same_with_the_cached_scaffold(name):
    """The real chat scaffold (42 / 30+ tokens) of the packaged models: answer logits of 4 SQuAD dev
    questions in one padded batch agree with and without the cache."""
    from pathlib import Path

    from latentwire.data import read_squad
    from latentwire.evaluation.baselines import text_prompt_maker
    from latentwire.evaluation.evaluate import model_view
    from latentwire.models import load_model, load_registry
    from latentwire.prompt import PromptArgs, answer_ids, eos_id
    from latentwire.scaffold_cache import scaffold_cache_off

    repo = Path(__file__).resolve().parents[1]
    manifest = repo / "resources" / "models" / name / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} missing (scripts/test.sh materializes it)")
    torch.set_num_threads(2)
    lm = load_model(load_registry(repo / "config" / "models.yaml")[name], manifest, device="cpu")
    examples = read_squad(repo / "resources" / "squad-dev-v1.1.json.gz")[:4]
    args = PromptArgs()
    eos = eos_id(lm.tokenizer, lm.spec.eos_token)
    golds = [answer_ids(e["answers"][0], lm.tokenizer, args, lm.uses_chat_template, eos) for e in examples]
    maker = text_prompt_maker(lm, args, "text")
    views = [model_view(e) for e in examples]
    out = []
    with torch.no_grad():
        for off in (True, False):
            if off:
                with scaffold_cache_off():
                    made = maker(views)
                    prompts, prefix = made.embeds, made.prefix
            else:
                made = maker(views)
                prompts, prefix = made.embeds, made.prefix
            batch, kw = with_prefix(lm.model, collate(lm.model, prompts, golds), prefix)
            out.append((answer_logits(lm.model, batch, **kw), batch.answer_ids, prefix))
    (whole, ids, none), (cached, _, prefix) = out
    assert none is None and prefix is not None and prefix.length >= 20
    real = ids != -100
    torch.testing.assert_close(cached[real], whole[real], rtol=1e-3, atol=2e-3)
