"""Bootstrap intervals: coverage on synthetic data, paired deltas, seed aggregation, errors."""

import numpy as np
import pytest

from latentwire.analysis.stats import (
    StatsArgs,
    bootstrap_ci,
    paired_diff_ci,
    paired_ratio_ci,
    resample_indices,
    seed_mean_ci,
    two_sample_ratio_ci,
    values_by_id,
)
from latentwire.config import ConfigError, from_dict

ARGS = StatsArgs(n_resamples=1000, seed=0, alpha=0.05)


def by_id(values) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_mean_ci_covers_the_true_mean_in_about_95_percent_of_samples():
    # 200 samples of n=100 Bernoulli(0.3): a 95% CI should cover 0.3 in roughly 90-99% of them
    # (the percentile bootstrap is slightly liberal at this n).
    rng = np.random.default_rng(123)
    samples = rng.binomial(1, 0.3, size=(200, 100)).astype(float)
    covered = 0
    for i, x in enumerate(samples):
        iv = bootstrap_ci(x, StatsArgs(1000, seed=i, alpha=0.05))
        assert iv.low <= iv.estimate <= iv.high
        covered += iv.low <= 0.3 <= iv.high
    assert 180 <= covered <= 198, covered


def test_interval_records_its_settings_and_is_reproducible():
    x = np.random.default_rng(0).normal(size=50)
    a, b = bootstrap_ci(x, ARGS), bootstrap_ci(x, ARGS)
    assert a == b
    assert (a.n, a.n_resamples, a.seed, a.alpha) == (50, 1000, 0, 0.05)
    assert a.estimate == pytest.approx(x.mean())
    assert bootstrap_ci(x, StatsArgs(1000, seed=1)) != a
    assert resample_indices(50, 1000, 0).shape == (1000, 50)


def test_known_constant_shift_is_recovered_exactly_with_a_narrow_ci():
    x = np.random.default_rng(1).uniform(0, 100, size=80)
    iv = paired_diff_ci(by_id(x + 3.0), by_id(x), ARGS)
    assert iv.estimate == pytest.approx(3.0, abs=1e-9)
    assert iv.high - iv.low < 1e-9


def test_paired_ci_is_narrower_than_the_separate_cis_for_correlated_systems():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 100, size=100)
    y = x + 2.0 + rng.normal(0, 1, size=100)
    paired = paired_diff_ci(by_id(y), by_id(x), ARGS)
    single = bootstrap_ci(y, ARGS)
    assert paired.low <= 2.0 <= paired.high
    assert paired.high - paired.low < (single.high - single.low) / 5


def test_pairing_is_by_id_not_by_position():
    a = {"a": 1.0, "b": 2.0, "c": 3.0}
    b = {"c": 2.0, "a": 0.0, "b": 1.0}  # same ids in another order, every one shifted by 1
    iv = paired_diff_ci(a, b, ARGS)
    assert iv.estimate == pytest.approx(1.0) and iv.high - iv.low < 1e-12


def test_mismatched_or_repeated_ids_raise():
    with pytest.raises(ValueError, match="same example ids"):
        paired_diff_ci({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0}, ARGS)
    with pytest.raises(ValueError, match="more than once"):
        values_by_id(["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], ARGS)


def test_ratios_paired_and_unpaired():
    x = np.random.default_rng(3).uniform(1, 5, size=60)
    iv = paired_ratio_ci(by_id(2 * x), by_id(x), ARGS)
    assert iv.estimate == pytest.approx(2.0) and iv.high - iv.low < 1e-9
    iv = two_sample_ratio_ci(np.full(10, 4.0), np.full(7, 2.0), ARGS, np.median)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((2.0, 2.0, 2.0))


def test_seed_mean_averages_seed_means_and_reports_their_spread():
    rng = np.random.default_rng(4)
    seeds = [rng.binomial(1, p, size=200).astype(float) for p in (0.3, 0.35, 0.4)]
    iv = seed_mean_ci(seeds, ARGS)
    assert iv.estimate == pytest.approx(np.mean([s.mean() for s in seeds]))
    assert iv.low < iv.estimate < iv.high
    assert iv.detail["n_seeds"] == 3 and iv.detail["seed_sd"] > 0
    # Averaging 3 seeds narrows the example-sampling interval relative to one seed.
    assert iv.high - iv.low < bootstrap_ci(seeds[0], ARGS).high - bootstrap_ci(seeds[0], ARGS).low
    independent = seed_mean_ci([seeds[0], seeds[1][:150]], ARGS, shared_examples=False)
    assert independent.n == 350
    with pytest.raises(ValueError, match="same number of examples"):
        seed_mean_ci([seeds[0], seeds[1][:150]], ARGS)


def test_stats_args_are_validated_strictly():
    assert from_dict(StatsArgs, {}) == StatsArgs(1000, 0, 0.05)
    with pytest.raises(ConfigError, match="stats.n_resample: unknown key"):
        from_dict(StatsArgs, {"n_resample": 10}, where="stats")
    with pytest.raises(ConfigError, match="alpha"):
        from_dict(StatsArgs, {"alpha": 1.5}, where="stats")


def test_cluster_weights_resample_whole_articles():
    from latentwire.analysis.stats import cluster_weights

    labels = ("a", "a", "a", "b", "c", "c")
    W = cluster_weights(labels, 200, 0)  # (R, n)
    assert W.shape == (200, 6)
    members = {"a": [0, 1, 2], "b": [3], "c": [4, 5]}
    for row in W:
        # each drawn copy of an article adds exactly its own size in questions
        per_article = {k: row[v].sum() / len(v) for k, v in members.items()}
        assert all(float(x).is_integer() for x in per_article.values())
        assert sum(per_article.values()) == 3  # K = 3 articles drawn
    assert not W.flags.writeable  # shared by every system: never mutated


def test_clustered_interval_is_wider_when_articles_are_correlated():
    rng = np.random.default_rng(1)
    labels = [f"art{k}" for k in range(10) for _ in range(20)]
    article_effect = rng.normal(0, 1, 10)
    x = np.repeat(article_effect, 20) + rng.normal(0, 0.1, 200)  # questions of an article move together
    args = StatsArgs(n_resamples=500, seed=0)
    flat = bootstrap_ci(x, args)
    clustered = bootstrap_ci(x, args, clusters=labels)
    assert clustered.estimate == pytest.approx(flat.estimate)
    assert (clustered.high - clustered.low) > 2.5 * (flat.high - flat.low)
    assert "clustered by article (10 articles" in clustered.method


def test_clustered_bootstrap_covers_the_truth():
    """Hierarchical data (article effect + noise): the clustered 90% interval covers the true mean
    in roughly 90% of samples; the question-level one far less often."""
    args = StatsArgs(n_resamples=300, seed=0, alpha=0.1)
    hits_c = hits_f = 0
    for rep in range(60):
        rng = np.random.default_rng(100 + rep)
        labels = [f"a{k}" for k in range(12) for _ in range(15)]
        x = np.repeat(rng.normal(0, 1, 12), 15) + rng.normal(0, 0.5, 180)
        c, f = bootstrap_ci(x, args, clusters=labels), bootstrap_ci(x, args)
        hits_c += c.low <= 0 <= c.high
        hits_f += f.low <= 0 <= f.high
    assert hits_c >= 45  # ~0.9 * 60 minus slack for 12 clusters
    assert hits_f < hits_c


def test_paired_diff_clusters_by_id():
    args = StatsArgs(n_resamples=200)
    a = {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 1.0}
    b = {"q1": 0.0, "q2": 0.0, "q3": 0.0, "q4": 1.0}
    iv = paired_diff_ci(a, b, args, clusters={"q1": "x", "q2": "x", "q3": "y", "q4": "y"})
    assert iv.estimate == pytest.approx(0.5) and "clustered" in iv.method
    with pytest.raises(ValueError, match="no article label"):
        paired_diff_ci(a, b, args, clusters={"q1": "x"})


def test_folds_of_one_dataset_pool_into_one_system_and_refuse_a_shared_question(tmp_path):
    from result_files import write_system

    from latentwire.analysis.results import ResultSet

    a = write_system(tmp_path / "f0", "m", "text", 1.0, ids=["q0", "q1"], titles=["A", "A"])
    b = write_system(tmp_path / "f1", "m", "text", 0.0, ids=["q2", "q3", "q4"], titles=["B", "B", "C"])
    rs = ResultSet.load([a, b], ["squad", "squad"])
    (s,) = rs.systems
    assert s.metrics["n"] == 5 and s.metrics["folds"] == 2 and len(s.rows) == 5
    assert s.metrics["f1"] == pytest.approx(2 / 5)  # the n-weighted mean: 2 of 5 questions right
    assert s.clusters() == {"q0": "A", "q1": "A", "q2": "B", "q3": "B", "q4": "C"}
    c = write_system(tmp_path / "f2", "m", "text", 0.5, ids=["q4"], titles=["C"])
    with pytest.raises(ValueError, match="both hold question q4"):
        ResultSet.load([a, b, c], ["squad"] * 3)
