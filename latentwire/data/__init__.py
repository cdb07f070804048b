"""Data preparation: SQuAD / HotpotQA readers, article-level splits, and the one parquet schema.

Typical use (what ``latentwire prepare`` does)::

    frames = prepare_dataset(from_dict(DatasetArgs, cfg, where="dataset"))
    write_splits(frames, out_dir, provenance(cfg))
    test = read_split(out_dir / "test.parquet")
"""

from latentwire.data.hotpot import HotpotContextArgs, build_context, parse_hotpot, read_hotpot
from latentwire.data.prepare import (
    DatasetArgs,
    SourceArgs,
    SplitArgs,
    prepare_dataset,
    read_provenance,
    read_source,
    read_split,
    write_splits,
)
from latentwire.data.schema import COLUMNS, DataError, arrow_schema, validate_frame
from latentwire.data.splits import assign_splits, split_sizes
from latentwire.data.squad import parse_squad, read_squad

__all__ = [
    "COLUMNS",
    "DataError",
    "DatasetArgs",
    "HotpotContextArgs",
    "SourceArgs",
    "SplitArgs",
    "arrow_schema",
    "assign_splits",
    "build_context",
    "parse_hotpot",
    "parse_squad",
    "prepare_dataset",
    "read_hotpot",
    "read_provenance",
    "read_source",
    "read_split",
    "read_squad",
    "split_sizes",
    "validate_frame",
    "write_splits",
]
