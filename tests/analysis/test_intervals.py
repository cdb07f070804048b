"""The intervals table: per-system CIs, the paired deltas it states, seed means, Markdown."""

import json

import pytest
from result_files import write_joint, write_system

from latentwire.analysis.intervals import build_intervals, to_markdown
from latentwire.analysis.results import ResultSet
from latentwire.analysis.stats import StatsArgs

ARGS = StatsArgs(n_resamples=200, seed=0)


def test_deltas_and_seed_means(tmp_path):
    files = [
        write_system(tmp_path, "m1", "text", 0.5),
        write_system(tmp_path, "m1", "budget-8", 0.2, content_positions=8),
    ]
    for seed, exp in enumerate(("e-s0", "e-s1")):  # same run config but train.seed: one seed group
        files.append(
            write_system(
                tmp_path, "m1", f"latent:{exp}", 0.3 + 0.1 * seed, content_positions=8, train_seed=seed
            )
        )
    joint = write_joint(tmp_path, "e-s0", {"m1": 0.3, "m2": 0.2}, 0.35,
                        examples=[{"id": f"q{i:03d}", "f1_joint": 0.35} for i in range(40)])  # fmt: skip
    rs = ResultSet.load(files, ["squad"] * len(files), [joint], ["squad"])
    df = build_intervals(rs, ARGS)
    f1 = df[df["metric"] == "f1"].set_index(["system", "reference"])
    assert f1.loc[("latent:e-s0", "text"), "estimate"] == pytest.approx(-20.0)
    assert f1.loc[("latent:e-s1", "budget-8"), "estimate"] == pytest.approx(20.0)
    assert f1.loc[("joint:e-s0", "best single (m1)"), "estimate"] == pytest.approx(5.0)
    seed_row = f1.loc[("latent:e-s0+e-s1", "")]
    assert seed_row["kind"] == "seed mean" and seed_row["estimate"] == pytest.approx(35.0)
    md = to_markdown(df, ARGS)
    assert "### Averaged over training seeds" in md and "| squad | m1 | latent:e-s0 | text | 40 |" in md


def test_tuned_ceilings_are_averaged_over_seeds_and_groups_are_named_in_seed_order(tmp_path):
    files = [write_system(tmp_path, "m1", "text", 0.5)]
    for seed in (2, 0, 1):  # files out of seed order
        files.append(write_system(tmp_path, "m1", f"text-tuned-s{seed}", 0.6 + 0.1 * seed))
    for seed, exp in ((1, "e-s1"), (0, "e")):
        files.append(
            write_system(
                tmp_path, "m1", f"latent:{exp}", 0.3 + 0.1 * seed, content_positions=8, train_seed=seed
            )
        )
        files.append(
            write_system(tmp_path, "m1", f"latent:{exp}:int8", 0.3, content_positions=8, train_seed=seed)
        )
    rs = ResultSet.load(files, ["squad"] * len(files), [], [])
    f1 = build_intervals(rs, ARGS)
    means = f1[(f1["metric"] == "f1") & (f1["kind"] == "seed mean")].set_index("system")
    assert means.loc["text-tuned-s0+s1+s2", "estimate"] == pytest.approx(70.0)
    assert means.loc["latent:e+e-s1", "estimate"] == pytest.approx(35.0)
    assert "latent:e+e-s1:int8" in means.index  # the variant's group is named like its main system's
    assert "select-text-8-tuned-s0+s1" not in means.index  # nothing made up


def test_joint_without_per_example_picks_is_a_point_estimate(tmp_path):
    files = [write_system(tmp_path, "m1", "latent:e", 0.3, content_positions=8)]
    joint = write_joint(tmp_path, "e", {"m1": 0.3, "m2": 0.2}, 0.32)
    df = build_intervals(ResultSet.load(files, ["squad"], [joint], ["squad"]), ARGS)
    row = df[df["system"] == "joint:e"].iloc[0]
    assert row["estimate"] == pytest.approx(2.0) and row["ci_low"] != row["ci_low"]  # NaN
    assert "aggregates only" in row["method"]
    assert "2.0 (point)" in to_markdown(df, ARGS)


def test_joint_of_an_extended_wire_pairs_with_the_experiments_own_rows(tmp_path):
    """An extended wire's joint.json (exp ``e+m3``) whose best single receiver is an old one: that
    receiver's rows are the source experiment's (``latent:e``, identical by wire_check), so the
    difference gets a paired CI."""
    files = [write_system(tmp_path, "m1", "latent:e", 0.3), write_system(tmp_path, "m3", "latent:e+m3", 0.1)]
    joint = write_joint(tmp_path, "e+m3", {"m1": 0.3, "m2": 0.2, "m3": 0.1}, 0.35,
                        examples=[{"id": f"q{i:03d}", "f1_joint": 0.35} for i in range(40)])  # fmt: skip
    j = json.loads(joint.read_text())
    j["provenance"]["config"]["source_exp"] = "e"
    joint.write_text(json.dumps(j))
    df = build_intervals(ResultSet.load(files, ["squad"] * 2, [joint], ["squad"]), ARGS)
    row = df[(df["system"] == "joint:e+m3") & (df["metric"] == "f1")].iloc[0]
    assert row["reference"] == "best single (m1)" and row["estimate"] == pytest.approx(5.0)
    assert row["ci_low"] == pytest.approx(5.0) and "paired" in row["method"]
