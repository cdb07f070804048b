"""Answer metrics on hand-made cases: SQuAD normalisation, EM/F1, post-processing, summaries."""

import math

import pytest

from latentwire.evaluation.metrics import (
    ANSWER_METRICS,
    exact_match,
    f1_score,
    mean,
    normalize_answer,
    percentile_summary,
    postprocess_answer,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("a dog and an apple", "dog and apple"),
        ("THE   Big\tRed\n dog", "big red dog"),
        ("Denver Broncos!", "denver broncos"),
        ("U.S.A.", "usa"),
        ("rock-and-roll", "rockandroll"),  # SQuAD deletes punctuation, it does not split on it
        ("banana", "banana"),  # "an" inside a word stays
        ("an anthem and a theme", "anthem and theme"),  # so do "a"/"the" inside words
        ("theatre", "theatre"),
        ("  ", ""),
        ("The", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_after_normalisation_and_max_over_golds():
    assert exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "Carolina Panthers"]) == 0.0


def test_f1_partial_overlap_by_hand():
    # pred tokens [big, red, dog] (the article goes), gold [red, dog]: P = 2/3, R = 1, F1 = 0.8.
    assert f1_score("the big red dog", ["red dog"]) == pytest.approx(0.8)
    # pred [red], gold [big, red, dog]: P = 1, R = 1/3, F1 = 0.5.
    assert f1_score("red", ["big red dog"]) == pytest.approx(0.5)
    # Repeated tokens count with multiplicity: pred [dog, dog], gold [dog]: P = 1/2, R = 1 -> 2/3.
    assert f1_score("dog dog", ["dog"]) == pytest.approx(2 / 3)


def test_f1_takes_the_max_over_golds():
    assert f1_score("big red dog", ["cat", "red dog", "big red dog"]) == 1.0
    assert f1_score("the big red dog", ["cat", "red dog"]) == pytest.approx(0.8)
    assert f1_score("cat", ["red dog", "big dog"]) == 0.0


def test_empty_prediction_scores_zero():
    assert f1_score("", ["red dog"]) == 0.0
    assert exact_match("", ["red dog"]) == 0.0
    # A gold that normalises to nothing only matches an empty prediction (as in the SQuAD script).
    assert f1_score("", ["the"]) == 1.0
    assert f1_score("dog", ["the"]) == 0.0


@pytest.mark.parametrize("metric", [exact_match, f1_score])
def test_metrics_reject_empty_golds(metric):
    with pytest.raises(ValueError, match="at least one gold answer"):
        metric("dog", [])


def test_answer_metrics_registry_holds_em_and_f1():
    assert ANSWER_METRICS.names() == ["em", "f1"]
    assert ANSWER_METRICS.get("f1")("the big red dog", ["red dog"]) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Denver Broncos", "Denver Broncos"),
        ("  Denver Broncos  ", "Denver Broncos"),
        ("\n\nDenver Broncos\nbecause they won", "Denver Broncos"),  # first non-empty line
        ("Answer: Denver Broncos", "Denver Broncos"),
        ("answer:Denver Broncos", "Denver Broncos"),
        ("The answer is Denver Broncos.", "Denver Broncos"),
        ("The final answer: 42", "42"),
        ('"Denver Broncos"', "Denver Broncos"),
        ("'Paris'", "Paris"),
        ("Paris.", "Paris"),
        ("St. Louis", "St. Louis"),  # only a final period goes
        ("", ""),
        ("\n  \n", ""),
    ],
)
def test_postprocess_answer(raw, expected):
    assert postprocess_answer(raw) == expected


def test_percentile_summary_by_hand():
    s = percentile_summary([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s["median"] == 3.0
    assert s["mean"] == 4.0
    # numpy's linear interpolation: rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (10 - 4) = 7.6
    assert s["p90"] == pytest.approx(7.6)
    assert set(s) == {"median", "p90", "mean"}


def test_percentile_summary_and_mean_of_nothing_are_nan():
    assert all(math.isnan(v) for v in percentile_summary([]).values())
    assert math.isnan(mean([]))
    assert mean([1, 2, 6]) == 3.0
