"""SQuAD v1.1 / v2.0 reader: answers kept and deduplicated, v2 skip/include, errors name the record."""

import gzip
import json

import pytest

from latentwire.data import DataError, read_squad


def _qa(qid, question, answers, **extra):
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": a, "answer_start": 0} for a in answers],
        **extra,
    }


def _squad_v1():
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Alpha",
                "paragraphs": [
                    {
                        "context": "Alpha context one.",
                        "qas": [_qa("a1", "Q a1?", ["x", "y", "x", "z", "y"]), _qa("a2", "Q a2?", ["w"])],
                    },
                    {"context": "Alpha context two.", "qas": [_qa("a3", "Q a3?", ["v"])]},
                ],
            },
            {"title": "Beta", "paragraphs": [{"context": "Beta ctx.", "qas": [_qa("b1", "Q b1?", ["u"])]}]},
        ],
    }


def _squad_v2():
    obj = _squad_v1()
    obj["version"] = "v2.0"
    obj["data"][1]["paragraphs"][0]["qas"].append(
        {
            "id": "b2",
            "question": "Unanswerable?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "p", "answer_start": 0}],
        }
    )
    return obj


def _write(tmp_path, obj, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_all_answers_kept_deduplicated_in_order(tmp_path):
    examples = read_squad(_write(tmp_path, _squad_v1()))
    assert [e["id"] for e in examples] == ["a1", "a2", "a3", "b1"]
    assert examples[0]["answers"] == ["x", "y", "z"]
    assert examples[0]["context"] == "Alpha context one."
    assert examples[2] == {
        "id": "a3",
        "question": "Q a3?",
        "answers": ["v"],
        "context": "Alpha context two.",
        "title": "Alpha",
    }


def test_v2_unanswerable_skipped_by_default_and_included_on_request(tmp_path):
    path = _write(tmp_path, _squad_v2())
    assert "b2" not in [e["id"] for e in read_squad(path)]
    examples = read_squad(path, include_unanswerable=True)
    b2 = [e for e in examples if e["id"] == "b2"]
    assert len(examples) == 5 and b2[0]["answers"] == [] and b2[0]["title"] == "Beta"


def test_json_gz_input_matches_plain_json(tmp_path):
    plain = _write(tmp_path, _squad_v1())
    gz = tmp_path / "squad.json.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_squad(gz) == read_squad(plain)


def test_missing_field_error_names_file_and_record(tmp_path):
    obj = _squad_v1()
    del obj["data"][0]["paragraphs"][1]["qas"][0]["question"]
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        read_squad(path)
    assert str(err.value) == f"{path}: data[0].paragraphs[1].qas[0]: missing field 'question'"


def test_empty_context_is_an_error(tmp_path):
    obj = _squad_v1()
    obj["data"][1]["paragraphs"][0]["context"] = "   "
    with pytest.raises(DataError, match=r"data\[1\]\.paragraphs\[0\]: field 'context' is empty"):
        read_squad(_write(tmp_path, obj))


def test_empty_answers_for_answerable_question_is_an_error(tmp_path):
    obj = _squad_v1()
    obj["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    with pytest.raises(DataError, match=r"qas\[1\]: empty 'answers'.*'a2'"):
        read_squad(_write(tmp_path, obj))


def test_malformed_json_error_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [')
    with pytest.raises(DataError, match=rf"^{path}: not valid JSON"):
        read_squad(path)


def test_missing_file_and_bad_checksum(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_squad(tmp_path / "nope.json")
    path = _write(tmp_path, _squad_v1())
    with pytest.raises(DataError, match=rf"^{path}: sha256 mismatch: expected 00+, got [0-9a-f]{{64}}"):
        read_squad(path, sha256="0" * 64)
