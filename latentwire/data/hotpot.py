"""HotpotQA reader: question records with a list of ``[title, sentences]`` paragraphs.

The distractor and fullwiki files share one layout::

    [{"_id", "question", "answer", "type", "level",
      "supporting_facts": [[title, sent_idx], ...],
      "context": [[title, [sentence, ...]], ...]}, ...]

How the paragraphs become one context string is set by :class:`HotpotContextArgs`. Each paragraph is
rendered as ``"Title: s1 s2 ..."`` (sentences stripped and joined by one space, since sentences carry
inconsistent leading spaces) and paragraphs are joined by a newline. The split grouping key
(``title``) is the sorted distinct supporting-fact titles joined by ``" | "``: the question's gold
article pair, so the same pair never lands in two splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from latentwire.data.inputs import load_hf_rows, load_json, require
from latentwire.data.schema import DataError

# One parsed example: id, question, context, answers (list[str]), title.
Example = dict[str, Any]
# One paragraph: (title, sentences).
Paragraph = tuple[str, list[str]]


@dataclass
class HotpotContextArgs:
    """How HotpotQA paragraphs become the context string.

    - ``full``: every paragraph, in file order.
    - ``ksent``: the first ``k_sentences`` sentences of each of the first ``max_paragraphs``.
    - ``supporting_facts``: only the gold supporting sentences. This leaks the answer location, so it
      is an oracle setting to be named explicitly, never a default.

    ``max_chars`` cuts the ``full`` / ``ksent`` context to that many characters (0 = no cap); it
    does not apply to ``supporting_facts``.
    """

    mode: Literal["full", "ksent", "supporting_facts"] = "full"
    k_sentences: int = 3
    max_paragraphs: int = 10
    max_chars: int = 4000

    def validate(self) -> None:
        if self.k_sentences < 1:
            raise ValueError(f"k_sentences must be >= 1, got {self.k_sentences}")
        if self.max_paragraphs < 1:
            raise ValueError(f"max_paragraphs must be >= 1, got {self.max_paragraphs}")
        if self.max_chars < 0:
            raise ValueError(f"max_chars must be >= 0 (0 = no cap), got {self.max_chars}")


def build_context(
    paragraphs: list[Paragraph], supporting: list[tuple[str, int]], args: HotpotContextArgs
) -> str:
    """The context string for one question (see :class:`HotpotContextArgs`)."""
    if args.mode == "supporting_facts":
        wanted = set(supporting)
        # Supporting facts whose index is past the paragraph's end (a known HotpotQA quirk) are skipped.
        chosen = [(t, [s for i, s in enumerate(sents) if (t, i) in wanted]) for t, sents in paragraphs]
    elif args.mode == "ksent":
        chosen = [(t, sents[: args.k_sentences]) for t, sents in paragraphs[: args.max_paragraphs]]
    else:
        chosen = paragraphs
    lines = []
    for title, sents in chosen:
        body = " ".join(s.strip() for s in sents if s.strip())
        if body:
            lines.append(f"{title}: {body}")
    text = "\n".join(lines)
    if args.mode != "supporting_facts" and args.max_chars and len(text) > args.max_chars:
        text = text[: args.max_chars].rstrip()
    return text


def read_hotpot(
    path: str | Path, *, context: HotpotContextArgs | None = None, sha256: str | None = None
) -> list[Example]:
    """Examples of a local HotpotQA ``.json`` / ``.json.gz`` file, in file order."""
    return parse_hotpot(load_json(path, sha256), str(path), context=context)


def parse_hotpot(obj: Any, source: str, *, context: HotpotContextArgs | None = None) -> list[Example]:
    """Examples of an already-parsed HotpotQA list; errors read ``{source}: [i] (_id=...): ...``."""
    args = context or HotpotContextArgs()
    if not isinstance(obj, list):
        raise DataError(f"{source}: <root>: expected a list of records, got {type(obj).__name__}")
    out = []
    for r, rec in enumerate(obj):
        where = f"{source}: [{r}]"
        qid = require(rec, "_id", str, where)
        where = f"{where} (_id={qid})"
        paragraphs = [
            _paragraph(p, f"{where}.context[{i}]") for i, p in enumerate(require(rec, "context", list, where))
        ]
        supporting = [
            _fact(f, f"{where}.supporting_facts[{i}]")
            for i, f in enumerate(require(rec, "supporting_facts", list, where))
        ]
        out.append(
            _example(
                qid,
                require(rec, "question", str, where),
                require(rec, "answer", str, where),
                paragraphs,
                supporting,
                args,
                where,
            )
        )
    return out


def read_hotpot_hf(
    name: str, config: str | None, split: str, *, context: HotpotContextArgs | None = None
) -> list[Example]:
    """Examples of a hub dataset in the ``hotpot_qa`` layout (needs ``datasets``).

    Hub rows use column-wise structs: ``context = {"title": [...], "sentences": [[...]]}`` and
    ``supporting_facts = {"title": [...], "sent_id": [...]}``.
    """
    args = context or HotpotContextArgs()
    out = []
    for r, row in enumerate(load_hf_rows(name, config, split)):
        where = f"hf:{name}[{split}][{r}]"
        ctx = require(row, "context", dict, where)
        sf = require(row, "supporting_facts", dict, where)
        paragraphs = [(str(t), list(s)) for t, s in zip(ctx.get("title", []), ctx.get("sentences", []))]
        supporting = [(str(t), int(i)) for t, i in zip(sf.get("title", []), sf.get("sent_id", []))]
        qid = require(row, "id", str, where)
        out.append(
            _example(
                qid,
                require(row, "question", str, where),
                require(row, "answer", str, where),
                paragraphs,
                supporting,
                args,
                where,
            )
        )
    return out


def _example(
    qid: str,
    question: str,
    answer: str,
    paragraphs: list[Paragraph],
    supporting: list[tuple[str, int]],
    args: HotpotContextArgs,
    where: str,
) -> Example:
    """One example dict; the context must come out non-empty and supporting facts must exist."""
    if not supporting:
        raise DataError(f"{where}: empty 'supporting_facts' (needed for the article grouping key)")
    text = build_context(paragraphs, supporting, args)
    if not text.strip():
        raise DataError(f"{where}: empty context (mode {args.mode!r})")
    title = " | ".join(sorted({t for t, _ in supporting}))
    return {"id": qid, "question": question, "context": text, "answers": [answer], "title": title}


def _paragraph(p: Any, where: str) -> Paragraph:
    """A ``[title, [sentences]]`` pair, checked."""
    if not (isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], list)):
        raise DataError(f"{where}: expected [title, [sentences]], got {p!r:.80}")
    if not all(isinstance(s, str) for s in p[1]):
        raise DataError(f"{where}: sentences must be strings")
    return p[0], p[1]


def _fact(f: Any, where: str) -> tuple[str, int]:
    """A ``[title, sentence_index]`` pair, checked."""
    if not (isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], int)):
        raise DataError(f"{where}: expected [title, sentence_index], got {f!r:.80}")
    return f[0], f[1]
