"""SQuAD v1.1 / v2.0 reader: the nested ``data → paragraphs → qas`` JSON into flat example dicts.

Every gold answer is kept (SQuAD dev has up to 3 annotator answers per question, often repeated),
deduplicated in first-seen order. SQuAD v2 unanswerable questions (``is_impossible``) are skipped
unless ``include_unanswerable`` is set, in which case they get ``answers=[]``. The article title is
the grouping key for splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentwire.data.inputs import load_hf_rows, load_json, require
from latentwire.data.schema import DataError, dedupe

# One parsed example: id, question, context, answers (list[str]), title.
Example = dict[str, Any]


def read_squad(
    path: str | Path, *, include_unanswerable: bool = False, sha256: str | None = None
) -> list[Example]:
    """Examples of a local SQuAD ``.json`` / ``.json.gz`` file, in file order."""
    return parse_squad(load_json(path, sha256), str(path), include_unanswerable=include_unanswerable)


def parse_squad(obj: Any, source: str, *, include_unanswerable: bool = False) -> list[Example]:
    """Examples of an already-parsed SQuAD JSON object; errors read ``{source}: data[i]...: ...``."""
    articles = require(obj, "data", list, f"{source}: <root>")
    out: list[Example] = []
    for a, article in enumerate(articles):
        where_a = f"{source}: data[{a}]"
        title = require(article, "title", str, where_a)
        for p, para in enumerate(require(article, "paragraphs", list, where_a)):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = require(para, "context", str, where_p)
            for q, qa in enumerate(require(para, "qas", list, where_p)):
                ex = _parse_qa(qa, f"{where_p}.qas[{q}]", include_unanswerable)
                if ex is not None:
                    out.append({**ex, "context": context, "title": title})
    return out


def _parse_qa(qa: Any, where: str, include_unanswerable: bool) -> Example | None:
    """id, question and answers of one ``qas`` entry; None for a skipped unanswerable question."""
    qid = require(qa, "id", str, where)
    question = require(qa, "question", str, where)
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise DataError(f"{where}: field 'is_impossible' has type {type(impossible).__name__}")
    if impossible and not include_unanswerable:
        return None
    answers = []
    for i, ans in enumerate(require(qa, "answers", list, where)):
        answers.append(require(ans, "text", str, f"{where}.answers[{i}]"))
    if not impossible and not answers:
        raise DataError(f"{where}: empty 'answers' for an answerable question (id {qid!r})")
    # v2 gives unanswerable questions no answers; keep it that way even if a file lists some.
    return {"id": qid, "question": question, "answers": [] if impossible else dedupe(answers)}


def read_squad_hf(
    name: str, config: str | None, split: str, *, include_unanswerable: bool = False
) -> list[Example]:
    """Examples of a hub dataset in the flat ``squad`` / ``squad_v2`` layout (needs ``datasets``).

    Hub rows carry ``answers = {"text": [...], "answer_start": [...]}``; an empty ``text`` list marks
    a v2 unanswerable question.
    """
    out: list[Example] = []
    for r, row in enumerate(load_hf_rows(name, config, split)):
        where = f"hf:{name}[{split}][{r}]"
        answers = require(row, "answers", dict, where).get("text", [])
        if not answers and not include_unanswerable:
            continue
        out.append(
            {
                "id": require(row, "id", str, where),
                "question": require(row, "question", str, where),
                "context": require(row, "context", str, where),
                "answers": dedupe([str(a) for a in answers]),
                "title": require(row, "title", str, where),
            }
        )
    return out
