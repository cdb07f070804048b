"""The prompt contract: the ONE place that turns an example into model token ids.

Baselines, training and evaluation all call :func:`build_prompt` and :func:`answer_ids`, so the
chat scaffold, system prompt, question/context layout, answer anchor and BOS policy can never
differ between train and eval (the earlier attempt lost months to such mismatches).

A prompt is three id segments::

    prefix   = [BOS?] chat header + system prompt + k solved shots + user-turn text before the content
    content  = the replaceable span (question + context, or context only)
    suffix   = user-turn text after the content + generation prompt + answer_prefix (the anchor)

Modes: ``text`` keeps all content; ``budget`` keeps its first M tokens; ``closed`` swaps it for
the question alone; ``latent`` leaves it empty and the caller inserts M soft tokens there. The
answer's first token directly follows the anchor; answers end with the end-of-turn token.

Styles: ``instruct`` (system prompt + user turn, through the model's chat template or
``plain_template``) and ``completion`` (no instruction, no chat template: a reading-comprehension
layout a base model continues, ``completion_template`` + anchor). Every model's prompt is the
workflow's global ``prompt:`` section with its registry entry's ``prompt:`` merged over it
(:func:`prompt_for`); k-shot examples come from the train split only (:func:`attach_shots`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from latentwire.config import ConfigError, from_dict, to_dict

_CONTENT = "\u2063LWCONTENT\u2063"  # sentinel that no real text or template contains

PromptKind = Literal["text", "budget", "closed", "latent"]

#: What plain generation stops at when ``stop_strings`` is unset (a base model's next line or turn).
PLAIN_STOP = ("\n", "Question:", "Context:")


@dataclass
class Shot:
    """One solved example of the k-shot prefix; ``split`` is where it came from (always train)."""

    id: str
    question: str
    context: str
    answer: str
    split: Literal["train"] = "train"


@dataclass
class PromptArgs:
    """Layout of every prompt. ``replaces`` says which part a latent (or a budget) stands in for."""

    # Defaults tuned on 24 SQuAD dev questions (text F1: Qwen2.5-Coder-0.5B 0.33 -> 0.42,
    # SmolLM2-135M 0.14 -> 0.18): a terse extraction instruction in the system prompt AND after
    # the content, plus an "Answer:" anchor, stop the small models from answering in sentences.
    system_prompt: str = (
        "You extract answers from a context. Reply with only the shortest exact phrase from the "
        "context that answers the question: a few words, never a full sentence, no explanation."
    )
    replaces: Literal["question_context", "context"] = "question_context"
    # question FIRST, so a token budget (first M content tokens) keeps the question
    content_template: str = "Question: {question}\nContext: {context}"
    closed_book_template: str = "Question: {question}"
    # may hold {question} only when replaces == "context"; text after {content} is part of the suffix
    user_template: str = "{content}\n\nAnswer with the exact phrase from the context, nothing else."
    # anchor after the generation prompt; one ending in ":" makes answers start with a space
    answer_prefix: str = "Answer:"
    # for models without a chat template; the anchor (answer_prefix) is appended after it
    plain_template: str = "{system}\n\n{user}\n"
    bos: Literal["auto", "always", "never"] = "auto"  # auto: as the chat template renders; plain: add
    # completion: no system prompt, no user_template, no chat template (base models); the text is
    # the shots, then completion_template (same placeholder rules as user_template), then the anchor
    style: Literal["instruct", "completion"] = "instruct"
    completion_template: str = "{content}\n"
    # k solved train examples in the prefix (constant scaffold), drawn with shot_seed by attach_shots
    shots: int = 0
    shot_seed: int = 0
    shot_separator: str = "\n\n"  # after each solved shot on the plain / completion path
    shot_examples: list[Shot] = field(default_factory=list)  # filled by attach_shots, never by hand
    # generation stops once the answer (leading whitespace aside) contains one of these; None: the
    # PLAIN_STOP markers on the plain / completion path, none under a chat template (its eos ends it)
    stop_strings: list[str] | None = None

    def validate(self) -> None:
        user_key = "completion_template" if self.style == "completion" else "user_template"
        user = getattr(self, user_key)
        if "{content}" not in user:
            raise ConfigError(f"prompt.{user_key}: must contain {{content}}")
        if self.replaces == "context":
            if "{question}" in self.content_template:
                raise ConfigError("prompt.content_template: {question} not allowed when replaces=context")
            if "{question}" not in user:
                raise ConfigError(f"prompt.{user_key}: needs {{question}} when replaces=context")
        elif "{question}" in user:
            raise ConfigError(f"prompt.{user_key}: {{question}} only allowed when replaces=context")
        if "{context}" not in self.content_template:
            raise ConfigError("prompt.content_template: must contain {context}")
        if self.shots < 0:
            raise ConfigError("prompt.shots: must be >= 0")
        if self.stop_strings is not None and not all(self.stop_strings):
            raise ConfigError("prompt.stop_strings: empty strings would stop every generation")


#: Keys a registry entry may not override: the latent of a multi-receiver run stands for ONE span,
#: and the shots are drawn once per run from the global seed (each model takes its first k).
GLOBAL_ONLY = ("replaces", "shot_seed", "shot_examples")


def prompt_for(spec, global_prompt: PromptArgs) -> PromptArgs:
    """The prompt of model ``spec``: ``global_prompt`` with the registry entry's ``prompt:`` merged
    over it, validated (errors name ``models.<name>.prompt.<key>``).

    Idempotent (applying it to its own result changes nothing), so library functions that take a
    loaded model call it themselves and callers may pass either the global or the model's prompt.
    The model's ``shots`` takes the first k of the global prompt's ``shot_examples``.
    """
    overrides = dict(getattr(spec, "prompt", None) or {})
    where = f"models.{spec.name}.prompt"
    bad = sorted(set(overrides) & set(GLOBAL_ONLY))
    if bad and any(overrides[k] != to_dict(global_prompt)[k] for k in bad):
        raise ConfigError(f"{where}.{bad[0]}: set in the global prompt section only (same for every model)")
    try:
        own = from_dict(PromptArgs, {**to_dict(global_prompt), **overrides}, where=where)
    except ConfigError as e:  # PromptArgs.validate names "prompt.<key>": say whose prompt it is
        msg = str(e)
        raise (ConfigError(f"models.{spec.name}.{msg}") if msg.startswith("prompt.") else e) from e
    return dataclasses.replace(own, shot_examples=own.shot_examples[: own.shots])


def check_overrides(overrides: Mapping) -> None:
    """Registry-time check of a ``prompt:`` override: known keys and their types (the merged
    prompt is validated as a whole by :func:`prompt_for`). Raises ValueError naming the key."""
    from latentwire.config import _coerce  # the strict leaf check of from_dict

    hints = typing.get_type_hints(PromptArgs)
    for key, value in overrides.items():
        if key not in hints:
            raise ValueError(f"prompt.{key}: unknown key(s); allowed: {', '.join(sorted(hints))}")
        try:
            _coerce(hints[key], value, f"prompt.{key}")
        except ConfigError as e:
            raise ValueError(str(e)) from e


def draw_shots(train, k: int, seed: int) -> list[Shot]:
    """``k`` solved examples of the TRAIN split (a frame or rows with a ``split`` column), fixed by
    ``seed``: the first k of a seeded permutation of the rows sorted by id, so a smaller k takes a
    prefix of a larger one. Any row of another split is an error (no validation/test leak):
    a :class:`~latentwire.data.DataError`, a one-line error of the CLIs like a bad k."""
    import numpy as np

    from latentwire.data.schema import DataError

    rows = train.to_dict("records") if hasattr(train, "to_dict") else list(train)
    splits = sorted({str(r.get("split")) for r in rows})
    if splits != ["train"]:
        raise DataError(f"k-shot examples come from the train split only; got rows of splits {splits}")
    if k > len(rows):
        raise ConfigError(f"prompt.shots: {k} shots but the train split has {len(rows)} examples")
    rows = sorted(rows, key=lambda r: str(r["id"]))
    order = np.random.default_rng(seed).permutation(len(rows))[:k]
    return [
        Shot(str(r["id"]), str(r["question"]), str(r["context"]), str(list(r["answers"])[0]))
        for r in (rows[i] for i in order)
    ]


def attach_shots(global_prompt: PromptArgs, specs, train) -> PromptArgs:
    """``global_prompt`` holding the shots every model of ``specs`` needs (the largest k of the
    global and the models' prompts), drawn from ``train`` (a frame, rows, or a callable returning
    one, called only when shots are needed); unchanged when no model uses shots."""
    k = max([global_prompt.shots] + [prompt_for(s, global_prompt).shots for s in specs])
    if k == 0:
        return global_prompt
    if train is None:
        raise ConfigError(f"prompt.shots: {k}-shot prompts need the train split (--shots-from)")
    shots = draw_shots(train() if callable(train) else train, k, global_prompt.shot_seed)
    return dataclasses.replace(global_prompt, shot_examples=shots)


def stop_strings(args: PromptArgs, chat: bool) -> list[str]:
    """The strings that end a generation for this prompt (see ``PromptArgs.stop_strings``)."""
    if args.stop_strings is not None:
        return list(args.stop_strings)
    return [] if _chat(args, chat) else list(PLAIN_STOP)


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to the first stop string after its leading whitespace (the answer proper)."""
    head = len(text) - len(text.lstrip())
    cut = min((i for i in (text.find(s, head) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _chat(args: PromptArgs, chat: bool) -> bool:
    """Whether the chat template renders this prompt (never under the completion style)."""
    return chat and args.style == "instruct"


@dataclass
class PromptIds:
    """Token ids of one prompt, split around the replaceable content span."""

    prefix: list[int]
    content: list[int]
    suffix: list[int]
    content_text: str  # the text the content span stands for (what an encoder reads)

    @property
    def ids(self) -> list[int]:
        return self.prefix + self.content + self.suffix


def content_text(example: Mapping, args: PromptArgs, kind: PromptKind = "text") -> str:
    """The replaceable text of ``example``: what text/budget prompts show and a latent replaces."""
    if kind == "closed":
        return args.closed_book_template.format(question=example["question"].strip())
    fields = {"context": example["context"].strip()}
    if args.replaces == "question_context":
        fields["question"] = example["question"].strip()
    return args.content_template.format(**fields)


def _user_text(example: Mapping, args: PromptArgs, content: str) -> str:
    """The user-turn text (``user_template``, or ``completion_template``) around ``content``."""
    fields = {"content": content}
    if args.replaces == "context":
        fields["question"] = example["question"].strip()
    template = args.completion_template if args.style == "completion" else args.user_template
    return template.format(**fields)


def _answer_text(answer: str, args: PromptArgs, chat: bool) -> str:
    """The gold answer as it follows the anchor: with a leading space after an anchor ending in
    ":" (the default "Answer:") and on the plain path, as the tokenizer sees it in running text."""
    text = answer.strip()
    return " " + text if not _chat(args, chat) or args.answer_prefix.endswith(":") else text


def _shots(args: PromptArgs) -> list[Shot]:
    if len(args.shot_examples) < args.shots:
        raise ValueError(
            f"prompt.shots = {args.shots} but {len(args.shot_examples)} shot examples are attached; "
            "resolve the prompt with attach_shots(prompt, specs, train split)"
        )
    return args.shot_examples[: args.shots]


def _render_scaffold(example: Mapping, tok, args: PromptArgs, chat: bool) -> tuple[str, str]:
    """Render the full scaffold around a sentinel and split it into (before, after) text.

    Each solved shot repeats the question's own layout with its answer after the anchor: a
    user/assistant turn pair under a chat template, text before the question's user text otherwise.
    """
    user = _user_text(example, args, _CONTENT)
    views = [({"question": s.question, "context": s.context}, s.answer) for s in _shots(args)]
    shots = [(_user_text(v, args, content_text(v, args)), a) for v, a in views]
    if _chat(args, chat):
        messages = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
        for shot_user, answer in shots:
            messages.append({"role": "user", "content": shot_user})
            messages.append(
                {"role": "assistant", "content": args.answer_prefix + _answer_text(answer, args, chat)}
            )
        messages.append({"role": "user", "content": user})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        # on the plain path a shot's user text is followed by what follows {user} in plain_template
        tail = "" if args.style == "completion" else args.plain_template.split("{user}", 1)[-1]
        prefix = "".join(
            u + tail + args.answer_prefix + _answer_text(a, args, chat) + args.shot_separator
            for u, a in shots
        )
        if args.style == "completion":
            text = prefix + user
        else:
            text = args.plain_template.format(system=args.system_prompt, user=prefix + user)
    if text.count(_CONTENT) != 1:
        raise ValueError("the chat template altered or duplicated the content placeholder")
    before, after = text.split(_CONTENT)
    return before, after + args.answer_prefix


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


def build_prompt(
    example: Mapping,
    tok,
    args: PromptArgs,
    chat: bool,
    kind: PromptKind = "text",
    budget: int | None = None,
) -> PromptIds:
    """Token ids of the prompt for ``example`` in mode ``kind`` (see module docstring).

    ``budget`` (M) is required for ``budget`` and ignored otherwise. ``chat`` selects the model's
    chat template (``LoadedModel.uses_chat_template``) or ``args.plain_template``; the completion
    style never uses the chat template. ``args`` is the model's prompt (:func:`prompt_for`).
    """
    before, after = _render_scaffold(example, tok, args, chat)
    prefix, suffix = _encode(tok, before), _encode(tok, after)
    bos = getattr(tok, "bos_token_id", None)
    add_bos = args.bos == "always" or (args.bos == "auto" and not _chat(args, chat))
    if add_bos and bos is not None and (not prefix or prefix[0] != bos):
        prefix = [bos] + prefix
    if args.bos == "never" and prefix and bos is not None and prefix[0] == bos:
        prefix = prefix[1:]
    text = content_text(example, args, kind)
    if kind == "latent":
        return PromptIds(prefix, [], suffix, text)
    content = _encode(tok, text)
    if kind == "budget":
        if budget is None or budget < 1:
            raise ValueError("budget prompts need a positive token budget M")
        content = content[:budget]
    return PromptIds(prefix, content, suffix, text)


def eos_id(tok, eos_token: str | None = None) -> int:
    """The end-of-answer id: the registry's ``eos_token`` if set, else the tokenizer's eos."""
    if eos_token is not None:
        return int(tok.convert_tokens_to_ids(eos_token))
    if tok.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token; set eos_token in the model registry")
    return int(tok.eos_token_id)


def answer_ids(answer: str, tok, args: PromptArgs, chat: bool, eos: int) -> list[int]:
    """Ids of the gold answer as the model should produce them after the anchor, ending in ``eos``.

    After an anchor ending in ":" (the default "Answer:") and on the plain path the answer carries
    a leading space, as the tokenizer sees it in running text ("Answer: Paris").
    """
    return _encode(tok, _answer_text(answer, args, chat)) + [eos]


def teacher_forcing(prompt: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example: labels are UNSHIFTED (HF shifts inside the model),
    -100 over the prompt so only the answer and its end token are supervised."""
    return prompt + answer, [-100] * len(prompt) + list(answer)
