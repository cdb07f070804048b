"""Article-level split assignment: deterministic, disjoint, sizes, fraction checks."""

import pytest

from latentwire.data import assign_splits, split_sizes

FRACS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_deterministic_and_seed_dependent():
    titles = [f"t{i}" for i in range(50)]
    a = assign_splits(titles, FRACS, seed=0)
    assert a == assign_splits(list(reversed(titles)) + titles, FRACS, seed=0)
    assert a != assign_splits(titles, FRACS, seed=1)
    # Key order of the fractions must not matter (the config hash sorts keys).
    assert a == assign_splits(titles, dict(reversed(list(FRACS.items()))), seed=0)


def test_every_title_in_exactly_one_split_with_expected_sizes():
    titles = [f"t{i}" for i in range(48)]
    a = assign_splits(titles, FRACS, seed=3)
    assert sorted(a) == sorted(titles)
    counts = {s: sum(v == s for v in a.values()) for s in FRACS}
    assert counts == {"train": 38, "validation": 5, "test": 5}


def test_small_splits_get_at_least_one_article():
    assert split_sizes(4, FRACS) == {"test": 1, "train": 2, "validation": 1}
    assert split_sizes(10, {"train": 0.98, "test": 0.02}) == {"test": 1, "train": 9}
    assert split_sizes(1, {"train": 0.5, "test": 0.5}) == {"test": 1, "train": 0}


@pytest.mark.parametrize("fractions", [{"train": 0.8, "test": 0.1}, {"train": 1.2, "test": -0.2}, {}])
def test_bad_fractions_raise(fractions):
    with pytest.raises(ValueError):
        assign_splits(["a", "b"], fractions, seed=0)


def test_k_fold_tests_every_article_exactly_once_and_never_trains_on_it():
    from latentwire.data.splits import assign_fold

    titles = [f"t{i}" for i in range(23)]
    tested = []
    for fold in range(5):
        a = assign_fold(titles, FRACS, seed=0, folds=5, fold=fold)
        assert sorted(a) == sorted(titles)
        test = {t for t, s in a.items() if s == "test"}
        assert len(test) in (4, 5) and {a[t] for t in set(titles) - test} <= {"train", "validation"}
        counts = {s: sum(v == s for v in a.values()) for s in ("train", "validation")}
        assert counts["validation"] == round((23 - len(test)) / 9)  # train : validation = 8 : 1
        tested += sorted(test)
    assert sorted(tested) == sorted(titles)  # each article in exactly one test fold
    assert assign_fold(titles, FRACS, 0, 5, 2) == assign_fold(list(reversed(titles)), FRACS, 0, 5, 2)


@pytest.mark.parametrize("folds, fold", [(1, 0), (5, 5), (30, 0)])
def test_k_fold_rejects_bad_folds(folds, fold):
    from latentwire.data.splits import assign_fold

    with pytest.raises(ValueError, match="fold"):
        assign_fold([f"t{i}" for i in range(10)], FRACS, seed=0, folds=folds, fold=fold)
