"""The prompt contract: the ONE place that turns an example into model token ids.

Baselines, training and evaluation all call :func:`build_prompt` and :func:`answer_ids`, so the
chat scaffold, system prompt, question/context layout, answer anchor and BOS policy can never
differ between train and eval (the earlier attempt lost months to such mismatches).

A prompt is three id segments::

    prefix   = [BOS?] chat header + system prompt + user-turn text before the content
    content  = the replaceable span (question + context, or context only)
    suffix   = user-turn text after the content + generation prompt + answer_prefix (the anchor)

Modes: ``text`` keeps all content; ``budget`` keeps its first M tokens; ``closed`` swaps it for
the question alone; ``latent`` leaves it empty and the caller inserts M soft tokens there. The
answer's first token directly follows the anchor; answers end with the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from latentwire.config import ConfigError

_CONTENT = "\u2063LWCONTENT\u2063"  # sentinel that no real text or template contains

PromptKind = Literal["text", "budget", "closed", "latent"]


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

    def validate(self) -> None:
        if "{content}" not in self.user_template:
            raise ConfigError("prompt.user_template: must contain {content}")
        if self.replaces == "context":
            if "{question}" in self.content_template:
                raise ConfigError("prompt.content_template: {question} not allowed when replaces=context")
            if "{question}" not in self.user_template:
                raise ConfigError("prompt.user_template: needs {question} when replaces=context")
        elif "{question}" in self.user_template:
            raise ConfigError("prompt.user_template: {question} only allowed when replaces=context")
        if "{context}" not in self.content_template:
            raise ConfigError("prompt.content_template: must contain {context}")


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


def _render_scaffold(example: Mapping, tok, args: PromptArgs, chat: bool) -> tuple[str, str]:
    """Render the full scaffold around a sentinel and split it into (before, after) text."""
    fields = {"content": _CONTENT}
    if args.replaces == "context":
        fields["question"] = example["question"].strip()
    user = args.user_template.format(**fields)
    if chat:
        messages = [{"role": "user", "content": user}]
        if args.system_prompt:
            messages.insert(0, {"role": "system", "content": args.system_prompt})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = args.plain_template.format(system=args.system_prompt, user=user)
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
    chat template (``LoadedModel.uses_chat_template``) or ``args.plain_template``.
    """
    before, after = _render_scaffold(example, tok, args, chat)
    prefix, suffix = _encode(tok, before), _encode(tok, after)
    bos = getattr(tok, "bos_token_id", None)
    add_bos = args.bos == "always" or (args.bos == "auto" and not chat)
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
    text = answer.strip()
    if not chat or args.answer_prefix.endswith(":"):
        text = " " + text
    return _encode(tok, text) + [eos]


def teacher_forcing(prompt: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example: labels are UNSHIFTED (HF shifts inside the model),
    -100 over the prompt so only the answer and its end token are supervised."""
    return prompt + answer, [-100] * len(prompt) + list(answer)
