"""The prompt contract (latentwire.prompt): segments, modes, BOS policy, answer ids, labels.

Fast tests use a tiny byte-level BPE tokenizer with a ChatML template built here. The ``slow``
tests load the REAL packaged tokenizers (resources/models/<name>/manifest.json, written by
``materialize``) and check that segment-wise tokenization reproduces what the model's own chat
template produces, and that the first answer token sits right after the anchor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from latentwire.config import ConfigError
from latentwire.prompt import (
    PromptArgs,
    Shot,
    answer_ids,
    attach_shots,
    build_prompt,
    content_text,
    cut_at_stop,
    draw_shots,
    eos_id,
    prompt_for,
    stop_strings,
    teacher_forcing,
)

ROOT = Path(__file__).resolve().parents[1]

CHATML = (
    "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Question: Who wrote the book? Context: The book was written by Jane Austen in 1813.",
    "Answer with the exact phrase from the context. The capital of France is Paris.",
    "system user assistant: the quick brown fox jumps over the lazy dog near the river bank.",
    "Super Bowl 50 was an American football game played on February 7, 2016, in Santa Clara.",
]
EXAMPLE = {
    "question": "  Who wrote the book? ",
    "context": "The book was written by Jane Austen in 1813. It is about the Bennet family.\n",
}


# --------------------------------------------------------------------------------------------
# Tiny tokenizer fixture
# --------------------------------------------------------------------------------------------


def _tiny_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def tok():
    return _tiny_tokenizer()


def _enc(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------------------------
# Fast tests: modes and segments
# --------------------------------------------------------------------------------------------


def test_text_mode_segments(tok):
    args = PromptArgs()
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="text")
    assert p.ids == p.prefix + p.content + p.suffix
    assert p.content_text == content_text(EXAMPLE, args, "text")
    assert p.content == _enc(tok, p.content_text)
    assert tok.decode(p.content) == p.content_text
    # question first (so a token budget keeps it), both stripped
    q, c = EXAMPLE["question"].strip(), EXAMPLE["context"].strip()
    assert q in p.content_text and c in p.content_text
    assert p.content_text.index(q) < p.content_text.index(c)
    # the whole prompt decodes to the rendered chat text + anchor
    rendered = tok.decode(p.ids)
    assert rendered.startswith("<|im_start|>system\n" + args.system_prompt + "<|im_end|>\n<|im_start|>user\n")
    assert rendered.endswith("<|im_start|>assistant\n" + args.answer_prefix)
    assert p.content_text in rendered


@pytest.mark.parametrize("m", [1, 5, 17])
def test_budget_keeps_first_m_content_tokens(tok, m):
    args = PromptArgs()
    full = build_prompt(EXAMPLE, tok, args, chat=True, kind="text")
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="budget", budget=m)
    assert len(full.content) > m
    assert p.content == full.content[:m]
    assert p.prefix == full.prefix and p.suffix == full.suffix
    assert p.content_text == full.content_text  # the text it stands for is still the full content


def test_budget_larger_than_content_keeps_everything(tok):
    args = PromptArgs()
    full = build_prompt(EXAMPLE, tok, args, chat=True, kind="text")
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="budget", budget=len(full.content) + 50)
    assert p.ids == full.ids


@pytest.mark.parametrize("budget", [None, 0, -3])
def test_budget_needs_positive_m(tok, budget):
    with pytest.raises(ValueError, match="positive token budget"):
        build_prompt(EXAMPLE, tok, PromptArgs(), chat=True, kind="budget", budget=budget)


def test_closed_book_shows_question_only(tok):
    args = PromptArgs()
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="closed")
    assert p.content_text == args.closed_book_template.format(question=EXAMPLE["question"].strip())
    assert EXAMPLE["context"].strip() not in tok.decode(p.ids)
    assert p.content == _enc(tok, p.content_text)


def test_latent_has_empty_content(tok):
    args = PromptArgs()
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="latent")
    assert p.content == []
    assert p.ids == p.prefix + p.suffix
    assert p.content_text == content_text(EXAMPLE, args, "text")  # what the encoder reads


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize(
    "args",
    [
        PromptArgs(),
        PromptArgs(answer_prefix="Answer:"),
        PromptArgs(
            replaces="context",
            content_template="Context: {context}",
            user_template="Question: {question}\n{content}",
        ),
    ],
    ids=["default", "anchor", "replaces-context"],
)
def test_prefix_and_suffix_identical_across_modes(tok, chat, args):
    args.validate()
    ps = [
        build_prompt(EXAMPLE, tok, args, chat, kind, budget=4)
        for kind in ("text", "budget", "closed", "latent")
    ]
    assert all(p.prefix == ps[0].prefix for p in ps)
    assert all(p.suffix == ps[0].suffix for p in ps)
    # two calls give identical ids (train and eval share this function)
    again = build_prompt(EXAMPLE, tok, args, chat, "text")
    assert again.ids == ps[0].ids


def test_replaces_context_puts_question_in_the_scaffold(tok):
    args = PromptArgs(
        replaces="context",
        content_template="Context: {context}",
        user_template="Question: {question}\n{content}",
    )
    args.validate()
    p = build_prompt(EXAMPLE, tok, args, chat=True, kind="text")
    assert "Who wrote the book?" in tok.decode(p.prefix)
    assert "Who wrote the book?" not in p.content_text
    assert p.content_text == "Context: " + EXAMPLE["context"].strip()


# --------------------------------------------------------------------------------------------
# Fast tests: validation
# --------------------------------------------------------------------------------------------


def test_default_args_validate():
    PromptArgs().validate()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"user_template": "no placeholder"}, r"user_template: must contain \{content\}"),
        ({"content_template": "Question: {question}"}, r"content_template: must contain \{context\}"),
        ({"user_template": "{question} {content}"}, r"\{question\} only allowed when replaces=context"),
        (
            {
                "replaces": "context",
                "content_template": "{question} {context}",
                "user_template": "{question}{content}",
            },
            r"\{question\} not allowed when replaces=context",
        ),
        (
            {"replaces": "context", "content_template": "Context: {context}", "user_template": "{content}"},
            r"needs \{question\} when replaces=context",
        ),
    ],
)
def test_validate_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PromptArgs(**kwargs).validate()


def test_template_that_duplicates_content_is_refused():
    dup = "{% for m in messages %}{{m.content}}{{m.content}}{% endfor %}"
    with pytest.raises(ValueError, match="content placeholder"):
        build_prompt(EXAMPLE, _tiny_tokenizer(dup), PromptArgs(), chat=True)


# --------------------------------------------------------------------------------------------
# Fast tests: BOS policy
# --------------------------------------------------------------------------------------------


def test_plain_template_adds_bos_once(tok):
    args = PromptArgs()
    bos = tok.bos_token_id
    for kind in ("text", "budget", "closed", "latent"):
        p = build_prompt(EXAMPLE, tok, args, chat=False, kind=kind, budget=3)
        assert p.prefix[0] == bos
        assert p.ids.count(bos) == 1
    text = tok.decode(build_prompt(EXAMPLE, tok, args, chat=False).ids, skip_special_tokens=True)
    assert text.startswith(args.system_prompt + "\n\n")
    assert text.endswith("\nAnswer:")


def test_plain_template_that_renders_bos_does_not_double_it(tok):
    args = PromptArgs(plain_template="<|endoftext|>{system}\n\n{user}\nAnswer:")
    p = build_prompt(EXAMPLE, tok, args, chat=False)
    assert p.prefix[0] == tok.bos_token_id and p.ids.count(tok.bos_token_id) == 1


def test_bos_policy_chat_and_never(tok):
    bos = tok.bos_token_id
    auto = build_prompt(EXAMPLE, tok, PromptArgs(), chat=True)
    assert bos not in auto.ids  # auto + chat: exactly what the chat template renders
    always = build_prompt(EXAMPLE, tok, PromptArgs(bos="always"), chat=True)
    assert always.ids == [bos] + auto.ids
    never = build_prompt(EXAMPLE, tok, PromptArgs(bos="never"), chat=False)
    assert bos not in never.ids
    assert never.ids == build_prompt(EXAMPLE, tok, PromptArgs(), chat=False).ids[1:]


# --------------------------------------------------------------------------------------------
# Fast tests: completion style, k-shot prefix, per-model prompts, stop strings
# --------------------------------------------------------------------------------------------

SHOTS = [
    Shot("t1", "Who wrote Emma?", "Emma is a novel by Jane Austen.", "Jane Austen"),
    Shot("t2", "When was it published?", "It was published in 1815.", "1815"),
]
COMPLETION = PromptArgs(style="completion", content_template="Context: {context}\nQuestion: {question}")


def _train_frame(n: int = 6, split: str = "train"):
    import pandas as pd

    rows = [
        {"id": f"{split}-{i}", "question": f"Q{i}?", "context": f"C{i}.", "answers": [f"A{i}", "x"]}
        for i in range(n)
    ]
    return pd.DataFrame([{**r, "split": split} for r in rows])


class _Spec:
    """A registry entry's two fields prompt_for reads."""

    def __init__(self, name: str, prompt: dict | None = None) -> None:
        self.name, self.prompt = name, prompt or {}


@pytest.mark.parametrize("chat", [False, True])
def test_completion_style_renders_the_reading_comprehension_layout(tok, chat):
    """No system prompt, no instruction and no chat template, even for a chat model."""
    p = build_prompt(EXAMPLE, tok, COMPLETION, chat)
    text = tok.decode(p.ids, skip_special_tokens=True)
    assert text == (
        "Context: The book was written by Jane Austen in 1813. It is about the Bennet family.\n"
        "Question: Who wrote the book?\nAnswer:"
    )
    assert p.prefix[0] == tok.bos_token_id  # bos auto: added, as on the plain path
    assert tok.decode(p.content) == content_text(EXAMPLE, COMPLETION)
    assert answer_ids("Jane Austen", tok, COMPLETION, chat, 7)[:-1] == _enc(tok, " Jane Austen")


def test_completion_style_validates_its_own_template():
    with pytest.raises(ConfigError, match="completion_template: must contain"):
        PromptArgs(style="completion", completion_template="{question}").validate()
    with pytest.raises(ConfigError, match="completion_template: needs {question}"):
        PromptArgs(style="completion", replaces="context", content_template="C: {context}").validate()


@pytest.mark.parametrize(
    "args, chat",
    [(COMPLETION, False), (PromptArgs(), False), (PromptArgs(), True)],
    ids=["completion", "plain", "chat"],
)
def test_shots_sit_in_the_constant_prefix_with_their_answers(tok, args, chat):
    args = PromptArgs(**{**args.__dict__, "shots": 2, "shot_examples": SHOTS})
    other = {"question": "Where?", "context": "Somewhere else entirely."}
    p, q = (build_prompt(e, tok, args, chat, "latent") for e in (EXAMPLE, other))
    assert p.prefix == q.prefix and p.suffix == q.suffix  # constant scaffold: shots included
    before = tok.decode(p.prefix, skip_special_tokens=True)
    for s in SHOTS:  # each shot: its content, then the anchor and its answer, as answer_ids has it
        shown = content_text({"question": s.question, "context": s.context}, args)
        assert shown in before
        assert f"{args.answer_prefix} {s.answer}" in before
    assert before.index("Emma") < before.index("1815")  # in draw order
    zero = build_prompt(EXAMPLE, tok, PromptArgs(**{**args.__dict__, "shots": 0}), chat)
    assert p.suffix == zero.suffix and len(p.prefix) > len(zero.prefix)


def test_completion_shots_render_as_documented(tok):
    """The example rendering in config/README.md."""
    args = PromptArgs(**{**COMPLETION.__dict__, "shots": 1, "shot_examples": SHOTS[:1]})
    text = tok.decode(build_prompt(EXAMPLE, tok, args, chat=False).ids, skip_special_tokens=True)
    assert text == (
        "Context: Emma is a novel by Jane Austen.\nQuestion: Who wrote Emma?\nAnswer: Jane Austen\n\n"
        "Context: The book was written by Jane Austen in 1813. It is about the Bennet family.\n"
        "Question: Who wrote the book?\nAnswer:"
    )


def test_plain_path_renders_as_documented(tok):
    """The plain path's example rendering in config/README.md (BOS is skipped by the decode)."""
    text = tok.decode(build_prompt(EXAMPLE, tok, PromptArgs(), chat=False).ids, skip_special_tokens=True)
    assert text == (
        PromptArgs().system_prompt + "\n\nQuestion: Who wrote the book?\n"
        "Context: The book was written by Jane Austen in 1813. It is about the Bennet family.\n\n"
        "Answer with the exact phrase from the context, nothing else.\nAnswer:"
    )


def test_shots_without_examples_fail_loudly(tok):
    with pytest.raises(ValueError, match="attach_shots"):
        build_prompt(EXAMPLE, tok, PromptArgs(shots=2), chat=True)


def test_draw_shots_fixed_by_seed_and_train_only():
    train = _train_frame()
    a = draw_shots(train, 3, seed=0)
    assert a == draw_shots(train.sample(frac=1.0, random_state=1), 3, seed=0)  # row order irrelevant
    assert draw_shots(train, 2, seed=0) == a[:2]  # a smaller k takes a prefix
    assert a != draw_shots(train, 3, seed=1)
    assert all(s.split == "train" and s.id.startswith("train-") for s in a)
    assert a[0].answer in {f"A{i}" for i in range(6)}  # the first reference answer
    for split in ("validation", "test"):
        mixed = __import__("pandas").concat([train, _train_frame(2, split)])
        with pytest.raises(ValueError, match="train split only"):
            draw_shots(mixed, 1, seed=0)
        with pytest.raises(ValueError, match="train split only"):
            attach_shots(PromptArgs(shots=1), [], _train_frame(4, split))
    with pytest.raises(ValueError, match="has 6 examples"):
        draw_shots(train, 7, seed=0)


def test_attach_shots_serves_every_model_its_first_k():
    specs = [_Spec("a", {"shots": 3}), _Spec("b")]
    g = attach_shots(PromptArgs(shots=1), specs, _train_frame)  # a callable: read only when needed
    assert len(g.shot_examples) == 3
    assert prompt_for(specs[0], g).shot_examples == g.shot_examples
    assert prompt_for(specs[1], g).shot_examples == g.shot_examples[:1]
    assert attach_shots(PromptArgs(), specs[1:], None) == PromptArgs()  # no shots: train not needed
    with pytest.raises(ValueError, match="need the train split"):
        attach_shots(PromptArgs(), specs, None)


def test_prompt_for_merges_the_registry_override_over_the_global_prompt():
    base = PromptArgs(answer_prefix="A:", system_prompt="Be brief.")
    spec = _Spec("base-lm", {"style": "completion", "answer_prefix": "Answer:"})
    own = prompt_for(spec, base)
    assert own.style == "completion" and own.answer_prefix == "Answer:"
    assert own.system_prompt == "Be brief."  # untouched keys come from the global prompt
    assert prompt_for(spec, own) == own  # idempotent
    assert prompt_for(_Spec("chat-lm"), base) == base


@pytest.mark.parametrize(
    "override, match",
    [
        ({"stlye": "completion"}, r"models\.m\.prompt\.stlye: unknown key"),
        ({"shots": "2"}, r"models\.m\.prompt\.shots: expected an integer"),
        ({"user_template": "no slot"}, r"models\.m\.prompt\.user_template: must contain"),
        ({"replaces": "context"}, r"models\.m\.prompt\.replaces: set in the global prompt"),
        ({"shot_seed": 3}, r"models\.m\.prompt\.shot_seed: set in the global prompt"),
    ],
)
def test_prompt_for_errors_name_the_key_path(override, match):
    with pytest.raises(ConfigError, match=match):
        prompt_for(_Spec("m", override), PromptArgs())
    assert prompt_for(_Spec("m", {"shot_seed": 0}), PromptArgs()) == PromptArgs()  # equal: allowed


def test_stop_strings_default_by_path_and_cut():
    assert stop_strings(PromptArgs(), chat=True) == []
    assert stop_strings(PromptArgs(), chat=False) == ["\n", "Question:", "Context:"]
    assert stop_strings(COMPLETION, chat=True) == ["\n", "Question:", "Context:"]
    assert stop_strings(PromptArgs(stop_strings=["###"]), chat=True) == ["###"]
    stops = stop_strings(COMPLETION, chat=False)
    assert cut_at_stop(" Jane Austen\n\nContext: more", stops) == " Jane Austen"
    assert cut_at_stop(" Jane Austen Question: who?", stops) == " Jane Austen "
    assert cut_at_stop("\n\n Jane Austen\nmore", stops) == "\n\n Jane Austen"  # leading blank lines
    assert cut_at_stop(" Jane Austen", stops) == " Jane Austen"
    with pytest.raises(ConfigError, match="stop_strings"):
        PromptArgs(stop_strings=[""]).validate()


# --------------------------------------------------------------------------------------------
# Fast tests: answers and labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chat, prefix, text",
    [(True, "", "Jane Austen"), (True, "Answer:", " Jane Austen"), (False, "", " Jane Austen")],
)
def test_answer_ids_end_with_eos_and_space_rule(tok, chat, prefix, text):
    eos = eos_id(tok)
    ids = answer_ids("  Jane Austen ", tok, PromptArgs(answer_prefix=prefix), chat, eos)
    assert ids[-1] == eos == tok.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(eos) == 1
    assert tok.decode(ids[:-1]) == text


def test_eos_id_override_and_missing(tok):
    assert eos_id(tok, "<|endoftext|>") == tok.convert_tokens_to_ids("<|endoftext|>")
    assert eos_id(tok) == tok.eos_token_id

    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="no eos_token"):
        eos_id(NoEos())


def test_teacher_forcing_labels(tok):
    args = PromptArgs()
    p = build_prompt(EXAMPLE, tok, args, chat=True)
    ans = answer_ids("Jane Austen", tok, args, True, eos_id(tok))
    ids, labels = teacher_forcing(p.ids, ans)
    assert ids == p.ids + ans
    assert len(labels) == len(ids)
    assert labels[: len(p.ids)] == [-100] * len(p.ids)
    assert labels[len(p.ids) :] == ans  # unshifted, ends with eos
    assert labels[-1] == tok.eos_token_id


# --------------------------------------------------------------------------------------------
# Slow tests: the real packaged tokenizers
# --------------------------------------------------------------------------------------------

REAL_MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]
N_REAL = 20


def _real(name: str):
    """(tokenizer, uses_chat_template, eos id) of a materialized registry model, or skip."""
    from transformers import AutoTokenizer

    from latentwire.io import read_json
    from latentwire.models import LoadedModel, load_registry

    manifest = ROOT / "resources" / "models" / name / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{name}: {manifest} missing (run `latentwire materialize` / materialize() first)")
    load_path = read_json(manifest)["load_path"]
    if not Path(load_path).is_dir():
        pytest.skip(f"{name}: manifest points at {load_path}, which does not exist here")
    spec = load_registry(ROOT / "config" / "models.yaml")[name]
    tok = AutoTokenizer.from_pretrained(load_path)
    lm = LoadedModel(spec=spec, model=None, tokenizer=tok, device=None, dtype=None)  # tokenizer-only
    return tok, lm.uses_chat_template, eos_id(tok, spec.eos_token)


@pytest.fixture(scope="module", params=REAL_MODELS)
def real(request):
    return (request.param, *_real(request.param))


@pytest.fixture(scope="module")
def squad_examples():
    from latentwire.data.squad import read_squad

    path = ROOT / "resources" / "squad-dev-v1.1.json.gz"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    exs = read_squad(path)
    return exs[:: len(exs) // N_REAL][:N_REAL]  # spread over articles


def _template_ids(tok, args: PromptArgs, example) -> list[int]:
    """Ids of the prompt as the model's own chat template tokenizes it in one piece."""
    user = args.user_template.format(content=content_text(example, args, "text"))
    messages = [{"role": "system", "content": args.system_prompt}, {"role": "user", "content": user}]
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(out["input_ids"] if hasattr(out, "keys") else out)
    return ids + _enc(tok, args.answer_prefix)


def _boundary_merges(tok, p, ref) -> bool:
    """True if ``ref`` equals ``p.ids`` except that the last content token and the first suffix
    token are one token in ``ref`` (the joint tokenization glued them across the boundary)."""
    cut = len(p.prefix) + len(p.content)
    if not p.content or not p.suffix or len(ref) != len(p.ids) - 1:
        return False
    merged = _enc(tok, tok.decode(p.content[-1:]) + tok.decode(p.suffix[:1]))
    return ref[: cut - 1] == p.ids[: cut - 1] and ref[cut - 1 :] == merged + p.suffix[1:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        PromptArgs(),
        PromptArgs(user_template="{content}", answer_prefix=""),
        PromptArgs(user_template="{content}\n\nAnswer briefly.", answer_prefix="Answer:"),
    ],
    ids=["defaults", "content-last", "instruction-after-content"],
)
def test_real_prompt_matches_chat_template(real, squad_examples, args):
    r"""Segment-wise tokenization (prefix | content | suffix) versus the template's joint one.

    Always: the same text, and the same prefix ids (the prefix ends in "\n" right after
    "<|im_start|>user", a pre-tokenizer boundary in both tokenizers). The content/suffix boundary is
    exact for SmolLM2 (GPT-2 regex: whitespace never joins the preceding punctuation), but Qwen2's
    regex `` ?[^\s\p{L}\p{N}]+[\r\n]*`` glues trailing punctuation to following newlines:
    when the user turn continues after the content with "\n\n..." and the context ends in ".",
    the template gives one ".\n\n" token where the contract has "." + "\n\n". That is the
    price of a fixed, content-independent suffix (a latent must be able to replace the content);
    we assert that it is the ONLY difference.
    """
    name, tok, chat, _ = real
    assert chat, f"{name}: packaged tokenizer should carry a chat template"
    exact = 0
    for ex in squad_examples:
        p = build_prompt(ex, tok, args, chat, "text")
        ref = _template_ids(tok, args, ex)
        assert tok.decode(p.ids) == tok.decode(ref)  # same text, always
        assert ref[: len(p.prefix)] == p.prefix  # prefix ids always identical
        assert ref[len(ref) - len(p.suffix) + 1 :] == p.suffix[1:]  # suffix identical after its 1st token
        if p.ids == ref:
            exact += 1
        else:
            assert _boundary_merges(tok, p, ref), f"{name}: {ex['id']}: unexpected tokenization difference"
    if name == "smollm2-135m" or args.user_template.endswith("{content}"):
        assert exact == len(squad_examples)


@pytest.mark.slow
def test_real_same_ids_across_calls_and_kinds(real, squad_examples):
    name, tok, chat, _ = real
    args = PromptArgs()
    for ex in squad_examples:
        train = build_prompt(ex, tok, args, chat, "latent")
        evals = [build_prompt(ex, tok, args, chat, k, budget=16) for k in ("text", "budget", "closed")]
        for p in evals:
            assert (p.prefix, p.suffix) == (train.prefix, train.suffix)
        assert build_prompt(ex, tok, args, chat, "text").ids == evals[0].ids
        assert evals[1].content == evals[0].content[:16]
        # question first: the budget keeps (the start of) the question
        assert tok.decode(evals[1].content).startswith(args.content_template.split("{")[0])


@pytest.mark.slow
def test_real_first_answer_token_follows_anchor(real, squad_examples):
    name, tok, chat, eos = real
    args = PromptArgs()
    for ex in squad_examples:
        p = build_prompt(ex, tok, args, chat, "text")
        ans = answer_ids(ex["answers"][0], tok, args, chat, eos)
        ids, labels = teacher_forcing(p.ids, ans)
        first = next(i for i, v in enumerate(labels) if v != -100)
        assert first == len(p.ids)
        assert labels[first:] == ans and labels[-1] == eos
        # joint tokenization of rendered prompt + answer text yields the same answer tokens
        rendered = tok.decode(p.ids)
        answer_text = tok.decode(ans[:-1])
        joint = _enc(tok, rendered + answer_text)
        assert joint[: len(joint) - len(ans) + 1] == _enc(tok, rendered), f"{name}: {ex['id']}"
        assert joint[len(joint) - len(ans) + 1 :] == ans[:-1], f"{name}: {ex['id']}"


@pytest.mark.slow
def test_real_pad_eos_never_masks_the_answer_end(real, squad_examples):
    """SmolLM2 ships pad_token == eos_token (<|im_end|>): supervision must come from -100 labels
    (teacher_forcing / pad_answers), never from ``ids != pad_token_id``."""
    from latentwire.batching import pad_answers

    name, tok, chat, eos = real
    if name == "smollm2-135m":
        assert tok.pad_token_id == tok.eos_token_id == eos
    args = PromptArgs()
    answers = [answer_ids(ex["answers"][0], tok, args, chat, eos) for ex in squad_examples[:4]]
    for ans in answers:
        p = build_prompt(squad_examples[0], tok, args, chat, "text")
        _, labels = teacher_forcing(p.ids, ans)
        assert labels[-1] == eos
        assert sum(v != -100 for v in labels) == len(ans)  # eos (== pad for SmolLM2) supervised
    import torch

    padded = pad_answers(answers, torch.device("cpu"))  # (B, A)
    for row, ans in zip(padded.tolist(), answers):
        assert row[: len(ans)] == ans and row[len(ans) - 1] == eos
        assert all(v == -100 for v in row[len(ans) :])  # padding is -100, not pad_token_id
