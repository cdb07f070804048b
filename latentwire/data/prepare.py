"""Dataset preparation: read the configured sources, assign article-level splits, write parquet.

``prepare_dataset`` builds everything in memory and ``write_splits`` writes ``{split}.parquet`` per
split plus ``provenance.json`` only after every table has been built and validated, so a bad source
never leaves a partial set of files behind. Split rules:

- records of a source with ``assign_split`` all go to that split (e.g. an official dev set used as
  the test split);
- the remaining records are split by article (``title``) with :class:`SplitArgs`;
- if an article of an assigned source also occurs among the remaining records, those remaining
  records are dropped (logged), so the assigned split stays exactly the assigned source and no
  article is in two splits. Two assigned sources that put one article into two different splits are
  an error.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latentwire.data.hotpot import HotpotContextArgs, read_hotpot, read_hotpot_hf
from latentwire.data.schema import COLUMNS, DataError, arrow_schema, validate_frame
from latentwire.data.splits import assign_fold, assign_splits, check_fractions
from latentwire.data.squad import read_squad, read_squad_hf
from latentwire.io import atomic_path, write_json

log = logging.getLogger(__name__)

# Key of the provenance JSON in each parquet file's key-value metadata.
METADATA_KEY = b"latentwire"


@dataclass
class SourceArgs:
    """One raw input file (or hub split) and how to read it."""

    format: Literal["squad", "hotpotqa"]
    path: str | None = None  # local .json / .json.gz, relative to the CWD
    hf_name: str | None = None  # datasets hub name (online users only)
    hf_config: str | None = None
    hf_split: str | None = None  # required with hf_name, e.g. "validation"
    sha256: str | None = None  # of the DECOMPRESSED JSON bytes; checked if set (local files only)
    assign_split: str | None = None  # all records into this split; None = split by article
    include_unanswerable: bool = False  # SQuAD v2 only
    hotpot_context: HotpotContextArgs = field(default_factory=HotpotContextArgs)

    def validate(self) -> None:
        if (self.path is None) == (self.hf_name is None):
            raise ValueError("set exactly one of 'path' and 'hf_name'")
        if self.hf_name is not None and not self.hf_split:
            raise ValueError("'hf_split' is required with 'hf_name'")
        if self.hf_name is not None and self.sha256 is not None:
            raise ValueError("'sha256' applies to a local 'path' only")
        if self.assign_split is not None and not self.assign_split.strip():
            raise ValueError("'assign_split' must be a non-empty split name or null")

    @property
    def label(self) -> str:
        """How errors and logs name this source."""
        return self.path if self.path is not None else f"hf:{self.hf_name}[{self.hf_split}]"


@dataclass
class SplitArgs:
    """Article-level split of the records that no source assigns explicitly."""

    fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    seed: int = 0
    folds: int = 0  # k >= 2: article-level k-fold, fold `fold` is the test split (splits.assign_fold)
    fold: int = 0

    def validate(self) -> None:
        check_fractions(self.fractions)
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"'folds' must be 0 (off) or >= 2, got {self.folds}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ValueError(f"'fold' must be in [0, folds = {self.folds}), got {self.fold}")

    def assign(self, titles) -> dict[str, str]:
        """Title -> split name under this rule."""
        if self.folds:
            return assign_fold(titles, self.fractions, self.seed, self.folds, self.fold)
        return assign_splits(titles, self.fractions, self.seed)

    @property
    def split_names(self) -> set[str]:
        """The splits this rule fills."""
        if self.folds:
            return {"test"} | {s for s in ("train", "validation") if self.fractions.get(s, 0) > 0}
        return {s for s, f in self.fractions.items() if f > 0}


@dataclass
class DatasetArgs:
    """A named prepared dataset: its sources, split rule and optional per-split size cap."""

    name: str
    sources: list[SourceArgs]
    split: SplitArgs = field(default_factory=SplitArgs)
    max_examples_per_split: int = 0  # 0 = all; else a seeded random subset, kept in source order

    def validate(self) -> None:
        if not self.name.strip():
            raise ValueError("'name' must be non-empty")
        if not self.sources:
            raise ValueError("'sources' must list at least one source")
        if self.max_examples_per_split < 0:
            raise ValueError("'max_examples_per_split' must be >= 0")


def read_source(src: SourceArgs) -> list[dict[str, Any]]:
    """The examples (id, question, context, answers, title) of one source, in source order."""
    if src.format == "squad":
        if src.path is not None:
            return read_squad(src.path, include_unanswerable=src.include_unanswerable, sha256=src.sha256)
        return read_squad_hf(
            src.hf_name, src.hf_config, src.hf_split, include_unanswerable=src.include_unanswerable
        )
    if src.path is not None:
        return read_hotpot(src.path, context=src.hotpot_context, sha256=src.sha256)
    return read_hotpot_hf(src.hf_name, src.hf_config, src.hf_split, context=src.hotpot_context)


def prepare_dataset(args: DatasetArgs) -> dict[str, pd.DataFrame]:
    """Read all sources and return one validated frame per split (columns :data:`COLUMNS`).

    Splits are the assigned ones plus, if any record is left unassigned, every split with a positive
    fraction. Within a split, rows keep source order then file order.
    """
    records = [(src, ex) for src in args.sources for ex in read_source(src)]
    _check_unique_ids(records)

    assigned: dict[str, str] = {}  # title -> split, from sources with assign_split
    for src, ex in records:
        if src.assign_split is None:
            continue
        prev = assigned.setdefault(ex["title"], src.assign_split)
        if prev != src.assign_split:
            raise DataError(
                f"{src.label}: article {ex['title']!r} is assigned to both {prev!r} and {src.assign_split!r}"
            )

    free = [(src, ex) for src, ex in records if src.assign_split is None]
    clashing = [ex for _, ex in free if ex["title"] in assigned]
    if clashing:
        log.warning(
            "dropped %d unassigned record(s) from %d article(s) that an assign_split source already places",
            len(clashing),
            len({ex["title"] for ex in clashing}),
        )
    free = [(src, ex) for src, ex in free if ex["title"] not in assigned]
    by_title = args.split.assign(ex["title"] for _, ex in free)

    names = sorted(set(assigned.values()))
    if free:
        names = sorted(set(names) | args.split.split_names)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in names}
    for src, ex in records:
        split = src.assign_split or by_title.get(ex["title"])
        if split is None or (src.assign_split is None and ex["title"] in assigned):
            continue
        rows[split].append({**ex, "split": split, "dataset": args.name})

    frames = {}
    for split, split_rows in rows.items():
        if args.max_examples_per_split and len(split_rows) > args.max_examples_per_split:
            # A string seed hashes through SHA-512 in random.Random: stable across runs and platforms.
            rng = random.Random(f"{args.split.seed}:{split}")
            keep = sorted(rng.sample(range(len(split_rows)), args.max_examples_per_split))
            split_rows = [split_rows[i] for i in keep]
        frame = pd.DataFrame(split_rows, columns=list(COLUMNS))
        validate_frame(frame, f"{args.name}/{split}")
        frames[split] = frame
    _check_disjoint(frames)
    return frames


def write_splits(
    frames: Mapping[str, pd.DataFrame], out_dir: str | Path, provenance_block: dict[str, Any]
) -> list[Path]:
    """Write ``{out_dir}/{split}.parquet`` per frame and ``{out_dir}/provenance.json``.

    The provenance JSON is also stored in each parquet's key-value metadata under
    :data:`METADATA_KEY`. All tables are converted and validated before the first file is written.
    Returns the parquet paths in split order.
    """
    out_dir = Path(out_dir)
    blob = json.dumps(provenance_block, sort_keys=True, default=str).encode()
    tables = {}
    for split, frame in frames.items():
        validate_frame(frame, f"{out_dir}/{split}")
        table = pa.Table.from_pandas(frame, schema=arrow_schema(), preserve_index=False)
        tables[split] = table.replace_schema_metadata({METADATA_KEY: blob})
    paths = []
    for split, table in tables.items():
        path = out_dir / f"{split}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        paths.append(path)
    write_json(out_dir / "provenance.json", provenance_block)
    return paths


def read_split(path: str | Path) -> pd.DataFrame:
    """A prepared split read back and validated; ``answers`` cells are ``list[str]``."""
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"{path}: cannot read parquet ({e})") from e
    frame["answers"] = [list(a) for a in frame["answers"]]
    validate_frame(frame, str(path))
    return frame


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance block stored in a prepared split's parquet metadata."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise DataError(f"{path}: no {METADATA_KEY.decode()!r} provenance in the parquet metadata")
    return json.loads(meta[METADATA_KEY])


def _check_unique_ids(records: list[tuple[SourceArgs, dict[str, Any]]]) -> None:
    """Raise naming the file(s) and the id if two records share an id."""
    seen: dict[str, str] = {}
    for src, ex in records:
        label = src.label
        if ex["id"] in seen:
            first = seen[ex["id"]]
            where = label if first == label else f"{first} and {label}"
            raise DataError(f"{where}: duplicate id {ex['id']!r}")
        seen[ex["id"]] = label


def _check_disjoint(frames: Mapping[str, pd.DataFrame]) -> None:
    """Assert that no article title occurs in two splits (guards the rules above)."""
    owner: dict[str, str] = {}
    for split, frame in frames.items():
        for title in set(frame["title"]):
            if owner.setdefault(title, split) != split:
                raise DataError(f"article {title!r} is in splits {owner[title]!r} and {split!r}")
