"""HotpotQA reader: context modes, character cap, grouping title, errors."""

import json

import pytest

from latentwire.data import DataError, HotpotContextArgs, read_hotpot


def _records():
    return [
        {
            "_id": "h1",
            "question": "Which came first?",
            "answer": "A",
            "type": "comparison",
            "level": "easy",
            "supporting_facts": [["Zed", 1], ["Able", 0], ["Zed", 0]],
            "context": [
                ["Able", ["Able s0.", " Able s1.", " Able s2.", " Able s3."]],
                ["Noise", ["Noise s0.", " Noise s1."]],
                ["Zed", ["Zed s0.", " Zed s1.", " Zed s2."]],
            ],
        },
        {
            "_id": "h2",
            "question": "Who?",
            "answer": "B",
            "type": "bridge",
            "level": "hard",
            "supporting_facts": [["Able", 3]],
            "context": [["Able", ["Able s0.", " Able s1.", " Able s2.", " Able s3."]]],
        },
        {
            "_id": "h3",
            "question": "Yes or no?",
            "answer": "yes",
            "type": "comparison",
            "level": "medium",
            "supporting_facts": [["Cee", 0], ["Dee", 0]],
            "context": [["Cee", ["Cee s0."]], ["Dee", ["Dee s0."]]],
        },
    ]


def _write(tmp_path, obj):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(obj))
    return path


def test_full_mode_all_paragraphs_and_grouping_title(tmp_path):
    ex = read_hotpot(_write(tmp_path, _records()))
    assert [e["id"] for e in ex] == ["h1", "h2", "h3"]
    assert ex[0]["context"] == (
        "Able: Able s0. Able s1. Able s2. Able s3.\nNoise: Noise s0. Noise s1.\nZed: Zed s0. Zed s1. Zed s2."
    )
    assert ex[0]["title"] == "Able | Zed"
    assert ex[1]["title"] == "Able"
    assert ex[2]["answers"] == ["yes"]


def test_ksent_mode_limits_sentences_and_paragraphs(tmp_path):
    args = HotpotContextArgs(mode="ksent", k_sentences=2, max_paragraphs=2)
    ex = read_hotpot(_write(tmp_path, _records()), context=args)
    assert ex[0]["context"] == "Able: Able s0. Able s1.\nNoise: Noise s0. Noise s1."


def test_supporting_facts_mode_keeps_only_gold_sentences(tmp_path):
    recs = _records()
    recs[1]["supporting_facts"].append(["Able", 99])  # out of range: skipped, not an error
    ex = read_hotpot(_write(tmp_path, recs), context=HotpotContextArgs(mode="supporting_facts", max_chars=5))
    assert ex[0]["context"] == "Able: Able s0.\nZed: Zed s0. Zed s1."
    assert ex[1]["context"] == "Able: Able s3."  # max_chars does not apply to this mode


def test_char_cap_applies_to_full_and_ksent(tmp_path):
    path = _write(tmp_path, _records())
    assert read_hotpot(path, context=HotpotContextArgs(max_chars=20))[0]["context"] == "Able: Able s0. Able"
    ks = HotpotContextArgs(mode="ksent", k_sentences=1, max_chars=12)
    assert read_hotpot(path, context=ks)[0]["context"] == "Able: Able s"
    uncapped = read_hotpot(path, context=HotpotContextArgs(max_chars=0))[0]["context"]
    assert len(uncapped) == 97 and uncapped.endswith("Zed s2.")


def test_missing_field_and_empty_context_errors_name_record(tmp_path):
    recs = _records()
    del recs[2]["answer"]
    path = _write(tmp_path, recs)
    with pytest.raises(DataError) as err:
        read_hotpot(path)
    assert str(err.value) == f"{path}: [2] (_id=h3): missing field 'answer'"
    recs = _records()
    recs[1]["context"] = [["Able", ["  ", ""]]]
    with pytest.raises(DataError, match=r"\[1\] \(_id=h2\): empty context"):
        read_hotpot(_write(tmp_path, recs))
