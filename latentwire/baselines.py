"""Text-side baselines: full text prompt, token budget (first M content tokens), closed book.

Each is a prompt maker for :func:`latentwire.evaluate.evaluate`, built on the prompt contract.
The ``name`` of a baseline is what the workflow's ``{baseline}`` wildcard holds: ``text``,
``closed`` or ``budget-M`` (for example ``budget-32``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from latentwire.batching import embed_ids
from latentwire.evaluate import EvalArgs, PromptMaker
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, build_prompt

_BASELINE = re.compile(r"^(text|closed|budget-(\d+))$")


@dataclass
class BaselineArgs:
    """One baseline run: which baseline, the prompt contract and the evaluation settings."""

    name: str  # text | closed | budget-M
    prompt: PromptArgs = field(default_factory=PromptArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)

    def validate(self) -> None:
        parse_baseline(self.name)


def parse_baseline(name: str) -> tuple[str, int | None]:
    """``budget-32`` → ("budget", 32); ``text`` → ("text", None)."""
    m = _BASELINE.match(name)
    if not m:
        raise ValueError(f"baseline {name!r}: expected text, closed or budget-M")
    return ("budget", int(m.group(2))) if m.group(2) else (name, None)


def text_prompt_maker(lm: LoadedModel, prompt_args: PromptArgs, name: str) -> PromptMaker:
    """Prompt maker for a text-side baseline ``name``."""
    kind, budget = parse_baseline(name)
    tok, chat = lm.tokenizer, lm.uses_chat_template
    limit = lm.spec.context_limit

    def make(views: list[dict]) -> tuple[list[torch.Tensor], list[dict]]:
        embeds, facts = [], []
        for v in views:
            full = build_prompt(v, tok, prompt_args, chat, "text")
            p = full if kind == "text" else build_prompt(v, tok, prompt_args, chat, kind, budget)
            ids = p.ids
            if len(ids) > limit:
                raise ValueError(
                    f"prompt of {len(ids)} tokens exceeds context_limit {limit} of {lm.spec.name}"
                )
            embeds.append(embed_ids(lm.model, ids, lm.device))  # (T_i, d)
            sent = tok.decode(p.content) if kind == "budget" else p.content_text
            facts.append(
                {
                    "prompt_tokens": len(ids),
                    "content_positions": len(p.content),
                    "text_content_tokens": len(full.content),
                    "payload_bytes": len(sent.encode("utf-8")),
                    "text_bytes": len(full.content_text.encode("utf-8")),
                }
            )
        return embeds, facts

    return make
