"""Atomic writes and JSON / JSON-lines round trips."""

import json
from pathlib import Path

import numpy as np
import pytest

from latentwire.io import atomic_path, read_json, read_jsonl, write_json, write_jsonl, write_text


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_path_moves_into_place_only_on_success(tmp_path):
    dest = tmp_path / "sub" / "out.txt"  # the parent folder is created
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        tmp.write_text("whole")
        assert not dest.exists()  # nothing visible before the block ends
    assert dest.read_text() == "whole"
    assert _leftovers(dest.parent, {"out.txt"}) == []


def test_atomic_path_exception_leaves_no_temp_and_no_new_file(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half of it")
            raise RuntimeError("killed")
    assert not dest.exists()
    assert _leftovers(tmp_path, set()) == []


def test_atomic_path_exception_keeps_the_previous_file_whole(tmp_path):
    dest = tmp_path / "out.json"
    write_json(dest, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("killed")
    assert read_json(dest) == {"version": 1}
    assert _leftovers(tmp_path, {"out.json"}) == []


def test_unserialisable_object_writes_nothing(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json(dest, {"x": object()})
    assert _leftovers(tmp_path, set()) == []


def test_write_json_round_trip_with_numpy_and_paths(tmp_path):
    obj = {"f1": np.float32(0.5), "n": np.int64(3), "path": Path("a/b"), "nested": [1, {"k": None}]}
    write_json(tmp_path / "m.json", obj)
    assert read_json(tmp_path / "m.json") == {"f1": 0.5, "n": 3, "path": "a/b", "nested": [1, {"k": None}]}


def test_jsonl_round_trip(tmp_path):
    rows = [{"id": "a", "prediction": "Zürich — ok"}, {"id": "b", "answers": ["x", "y"], "score": 0.25}]
    path = tmp_path / "p.jsonl"
    write_jsonl(path, rows)
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 2 and "Zürich" in text  # one line per row, UTF-8 kept readable
    assert read_jsonl(path) == rows


def test_jsonl_of_no_rows_is_an_empty_file(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [])
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert read_jsonl(tmp_path / "e.jsonl") == []


def test_read_json_error_names_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    write_text(bad, '{"f1": 0.5')
    with pytest.raises(ValueError, match=rf"^{bad}: not valid JSON"):
        read_json(bad)


def test_read_jsonl_error_names_file_and_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"id": 1}) + "\n\n" + "{oops\n")
    with pytest.raises(ValueError, match=rf"^{bad}:3: not valid JSON"):
        read_jsonl(bad)
