"""The one table every data-preparation step produces, and the check that a frame matches it.

One row is one question. Columns (all required, in this order):

- ``id`` (str): the example id from the source file; unique across the whole prepared dataset.
- ``question`` (str): the question text, as in the source (not stripped).
- ``context`` (str): the passage the question is asked about (non-empty).
- ``answers`` (list[str]): every gold answer, deduplicated keeping first-seen order. Empty only for
  SQuAD v2 unanswerable questions kept with ``include_unanswerable``.
- ``title`` (str): the article the example belongs to; the key that keeps an article in one split.
- ``split`` (str): ``train`` / ``validation`` / ``test`` or any split named in the config.
- ``dataset`` (str): the ``DatasetArgs.name`` the example was prepared under.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

COLUMNS: tuple[str, ...] = ("id", "question", "context", "answers", "title", "split", "dataset")

# Columns that must hold a non-empty string in every row.
_NONEMPTY_STR = ("id", "question", "context", "title", "split", "dataset")


class DataError(ValueError):
    """A raw input or a prepared table is invalid; the message names the file and the record."""


def arrow_schema() -> pa.Schema:
    """The pyarrow schema of a prepared split (used when writing parquet)."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("context", pa.string()),
            ("answers", pa.list_(pa.string())),
            ("title", pa.string()),
            ("split", pa.string()),
            ("dataset", pa.string()),
        ]
    )


def dedupe(items: list[str]) -> list[str]:
    """``items`` without repeats, keeping the first occurrence's position."""
    return list(dict.fromkeys(items))


def validate_frame(df: pd.DataFrame, where: str = "frame") -> None:
    """Raise :class:`DataError` (prefixed by ``where``) unless ``df`` matches :data:`COLUMNS`.

    Checks the column names and order, that string columns hold non-empty ``str``, that
    ``answers`` holds a ``list`` of ``str`` in every row, and that ``id`` is unique.
    """
    if tuple(df.columns) != COLUMNS:
        raise DataError(f"{where}: columns are {list(df.columns)}, expected {list(COLUMNS)}")
    for col in _NONEMPTY_STR:
        bad = [i for i, v in enumerate(df[col]) if not isinstance(v, str) or not v.strip()]
        if bad:
            row = bad[0]
            raise DataError(
                f"{where}: row {row}: column {col!r} must be a non-empty string, got {df[col].iloc[row]!r}"
            )
    for row, answers in enumerate(df["answers"]):
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(
                f"{where}: row {row}: column 'answers' must be a list of strings, got {answers!r}"
            )
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise DataError(f"{where}: duplicate id {dup.iloc[0]!r}")
