"""scripts/f1_by_answer_position.py: groups by the gold answer's end token and per-group mean F1."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "f1_by_answer_position.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("f1_by_answer_position", SCRIPT)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


class WordTok:
    """One token per whitespace-separated word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def test_answer_end_token_takes_the_earliest_verbatim_answer(mod):
    ctx = "a b c d e f"
    assert mod.answer_end_token(WordTok(), ctx, ["e", "b c"]) == 3  # "a b c": the earlier span wins
    assert mod.answer_end_token(WordTok(), ctx, ["zz"]) is None
    assert mod.group_of(3, 3) == "ends in first 3 tokens"
    assert mod.group_of(4, 3) == "ends after token 3"
    assert mod.group_of(None, 3) == "answer not verbatim"


def test_main_writes_per_group_means(mod, tmp_path, monkeypatch):
    pd.DataFrame(
        {"id": ["q1", "q2"], "context": ["x y z", "p q r s t"], "answers": [["y"], ["t"]]}
    ).to_parquet(tmp_path / "test.parquet")
    for name, f1 in (("lat", [0.5, 1.0]), ("bud", [1.0, 0.0])):
        (tmp_path / f"{name}.jsonl").write_text(
            "\n".join(json.dumps({"id": i, "f1": v}) for i, v in zip(["q1", "q2"], f1))
        )
    monkeypatch.setattr(mod.AutoTokenizer, "from_pretrained", lambda path: WordTok())
    out = tmp_path / "out.csv"
    argv = ["x", "--data", str(tmp_path / "test.parquet"), "--tokenizer", "t", "--window", "2"]
    argv += ["--system", f"lat={tmp_path / 'lat.jsonl'}", "--system", f"bud={tmp_path / 'bud.jsonl'}"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    mod.main()
    rows = out.read_text().splitlines()
    assert rows[0] == "group,n,lat,bud"
    assert "ends after token 2,1,100.0,0.0" in rows  # q2: "t" ends at word 5
    assert "ends in first 2 tokens,1,50.0,100.0" in rows  # q1: "y" ends at word 2
    assert rows[-1] == "all,2,75.0,50.0"
