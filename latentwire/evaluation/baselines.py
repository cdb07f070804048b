"""Text-side baselines and discrete comparators, each a prompt maker for :func:`~.evaluate.evaluate`.

The ``name`` of a baseline is what the workflow's ``{baseline}`` wildcard holds:

- ``text`` (full prompt), ``closed`` (question only), ``budget-M`` (first M content tokens);
- the discrete comparators of :mod:`latentwire.evaluation.comparators` at M content positions: ``tail-M``,
  ``lexical-M``, ``selfinfo-M``, ``select-text-M`` and the upper bound ``oracle-M``.

All are built on the prompt contract: the same prefix and suffix, only the content span differs.
Every prompt's facts include its content positions and its payload as UTF-8 bytes of the content it
sends and as packed token ids (⌈log2 V⌉ bits per id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from latentwire.batching import PromptMaker, Prompts, embed_ids
from latentwire.evaluation.comparators import COMPARATORS, Content, content_offsets, packed_id_bytes
from latentwire.evaluation.evaluate import EvalArgs
from latentwire.models import LoadedModel
from latentwire.prompt import PromptArgs, PromptIds, build_prompt, content_text, prompt_for
from latentwire.scaffold_cache import scaffold_prefix, shared_scaffold

_BASELINE = re.compile(r"^(text|closed)$|^(budget|tail|lexical|selfinfo|oracle|select-text)-([1-9]\d*)$")


@dataclass
class BaselineArgs:
    """One baseline run: which baseline, the prompt contract and the evaluation settings."""

    name: str  # text | closed | budget-M | tail-M | lexical-M | selfinfo-M | oracle-M | select-text-M
    prompt: PromptArgs = field(default_factory=PromptArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)

    def validate(self) -> None:
        parse_baseline(self.name)


def parse_baseline(name: str) -> tuple[str, int | None]:
    """``budget-32`` → ("budget", 32); ``select-text-48`` → ("select-text", 48); ``text`` → ("text", None)."""
    m = _BASELINE.match(name)
    if not m:
        raise ValueError(
            f"baseline {name!r}: expected text, closed, or budget|tail|lexical|selfinfo|oracle|select-text-M"
        )
    return (m.group(1), None) if m.group(1) else (m.group(2), int(m.group(3)))


def text_prompt_maker(
    lm: LoadedModel,
    prompt_args: PromptArgs,
    name: str,
    windows: Mapping[str, Mapping] | None = None,
    gold: Mapping[str, list[str]] | None = None,
) -> PromptMaker:
    """Prompt maker for the text-side baseline ``name``.

    ``windows``: content text -> ``select-windows`` record (``select-text-M`` only). ``gold``: content
    text -> gold answers, for the ``oracle-M`` upper bound only (every other kind never sees it).
    Both are keyed by the content text of the run's ``prompt_args`` (the encoder's text); the prompt
    itself is ``lm``'s own (registry override merged, :func:`~latentwire.prompt.prompt_for`).
    """
    run_args = prompt_args
    kind, budget = parse_baseline(name)
    prompt_args = prompt_for(lm.spec, prompt_args)
    tok, chat = lm.tokenizer, lm.uses_chat_template
    limit = lm.spec.context_limit
    if kind == "select-text" and windows is None:
        raise ValueError(f"baseline {name}: needs the select windows file (--windows)")
    if kind == "oracle" and gold is None:
        raise ValueError(f"baseline {name}: the oracle needs the gold answers")
    selector = COMPARATORS.get(kind) if kind in COMPARATORS else None
    vocab = len(tok)

    def make(views: list[dict]) -> Prompts:
        rows, heads, facts = [], [], []
        for v in views:
            full = build_prompt(v, tok, prompt_args, chat, "text")
            if selector is not None:
                p = PromptIds(full.prefix, _selected(v, full, selector), full.suffix, full.content_text)
            elif kind == "text":
                p = full
            else:
                p = build_prompt(v, tok, prompt_args, chat, kind, budget)
            ids = p.ids
            if len(ids) > limit:
                raise ValueError(
                    f"prompt of {len(ids)} tokens exceeds context_limit {limit} of {lm.spec.name}"
                )
            rows.append(ids)
            heads.append(p.prefix)
            sent = p.content_text if kind in ("text", "closed") else tok.decode(p.content)
            facts.append(
                {
                    "prompt_tokens": len(ids),
                    "content_positions": len(p.content),
                    "text_content_tokens": len(full.content),
                    "payload_bytes": len(sent.encode("utf-8")),
                    "payload_id_bytes": packed_id_bytes(len(p.content), vocab),
                    "text_bytes": len(full.content_text.encode("utf-8")),
                }
            )
        # the scaffold every row starts with, from the receiver's cache (scaffold_cache)
        shared = shared_scaffold(heads)
        prefix = scaffold_prefix(lm.model, shared, len(rows)) if shared else None
        cut = len(shared) if prefix is not None else 0
        embeds = [embed_ids(lm.model, ids[cut:], lm.device) for ids in rows]  # (T_i - cut, d)
        return Prompts(embeds, facts, prefix)

    def _selected(view: dict, full: PromptIds, selector) -> list[int]:
        text, key = content_text(view, prompt_args), content_text(view, run_args)
        ids, offsets = content_offsets(tok, text)
        if ids != full.content:
            raise ValueError(f"{lm.spec.name}: offset tokenization differs from the prompt's content ids")
        c = Content(text, ids, offsets, full.prefix)
        if prompt_args.replaces == "context":  # the question is shown as text, beside the content
            c.question = str(view["question"]).strip()
        if kind == "oracle":
            c.answers = gold[key]
        if kind == "select-text":
            if key not in windows:
                raise KeyError(f"baseline {name}: no select window for an example (content {text[:60]!r}…)")
            c.window = windows[key]
        return selector(c, budget, lm)

    return make
