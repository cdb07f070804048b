"""The hypothesis table on hand-made results: met, not met, not evaluable; and ``latentwire stats``."""

import pandas as pd
import pytest
from result_files import write_joint, write_system

from latentwire.analysis.hypotheses import MET, NOT_EVALUABLE, NOT_MET, build_hypotheses
from latentwire.analysis.results import ResultSet
from latentwire.analysis.stats import StatsArgs
from latentwire.cli.main import main

ARGS = StatsArgs(n_resamples=300, seed=0, alpha=0.05)
N = 40
TEXT_F1 = [1.0 if i % 2 else 0.6 for i in range(N)]  # per-example F1 in [0, 1]


def baselines(root, model="m1", budgets=(12,)):
    files = [write_system(root, model, "text", TEXT_F1, prefill_s=0.2, text_bytes=900.0)]
    files += [write_system(root, model, f"budget-{b}", 0.1, content_positions=b, nll=4.0) for b in budgets]
    files.append(write_system(root, model, "closed", 0.05, content_positions=20, nll=5.0))
    return files


def latent(root, f1, model="m1", exp="e", M=12, nll=2.0, **kw):
    common = dict(content_positions=M, text_tokens=120.0, payload_bytes=128.0, text_bytes=900.0, **kw)
    return [
        write_system(root, model, f"latent:{exp}", f1, nll=nll, prefill_s=0.02, **common),
        write_system(root, model, f"latent:{exp}:shuffled", 0.0, nll=6.0, prefill_s=0.02, **common),
        write_system(root, model, f"latent:{exp}:int8", f1, nll=nll, prefill_s=0.02, **{**common, "payload_bytes": 64.0}),
    ]  # fmt: skip


def table(files, joints=()) -> pd.DataFrame:
    rs = ResultSet.load(files, ["squad"] * len(files), list(joints), ["squad"] * len(joints))
    return build_hypotheses(rs, ARGS).set_index(["hypothesis", "model"])


def test_met_when_the_latent_matches_text_at_high_compression(tmp_path):
    files = baselines(tmp_path) + latent(tmp_path, [f - 0.01 for f in TEXT_F1])  # 1 F1 point below text
    joint = write_joint(tmp_path, "e", {"m1": 0.79, "m2": 0.5}, 0.85,
                        examples=[{"id": f"q{i:03d}", "f1_joint": f + 0.06} for i, f in enumerate(TEXT_F1)])  # fmt: skip
    df = table(files, [joint])
    for h in ("H1", "H2", "H3", "H5a", "H5b"):
        assert df.loc[(h, "m1"), "status"] == MET, (h, df.loc[(h, "m1"), "note"])
    h1 = df.loc[("H1", "m1")]
    assert h1["estimate"] == pytest.approx(-1.0) and h1["ci_low"] == pytest.approx(-1.0)  # a constant shift
    assert df.loc[("H2", "m1"), "reference"] == "budget-12"
    h4 = df.loc[("H4", "joint")]  # per-example joint picks vs the best receiver (m1): +7 points, paired
    assert h4["status"] == MET and h4["estimate"] == pytest.approx(7.0) and h4["ci_low"] > 1.5
    assert "900" in df.loc[("H5b", "m1"), "note"] and "int8 64 B" in df.loc[("H5b", "m1"), "note"]
    assert set(df["n_resamples"]) == {300} and set(df["seed"]) == {0} and set(df["alpha"]) == {0.05}


def test_not_met_when_the_latent_falls_short(tmp_path):
    # F1 far below text and budget, NLL 50% worse, compression only 120/40 = 3x, more bytes than text.
    files = baselines(tmp_path, budgets=(40,)) + latent(tmp_path, 0.0, M=40, nll=3.0)
    files[-3:] = [write_system(tmp_path, "m1", s, 0.0, nll=3.0, content_positions=40, payload_bytes=4096.0,
                               text_bytes=900.0) for s in ("latent:e", "latent:e:shuffled", "latent:e:int8")]  # fmt: skip
    joint = write_joint(tmp_path, "e", {"m1": 0.0, "m2": 0.0}, 0.005)  # aggregates only, +0.5 points
    df = table(files, [joint])
    for h in ("H1", "H2", "H3", "H5a", "H5b"):
        assert df.loc[(h, "m1"), "status"] == NOT_MET, h
    assert "3.00× (< 4×)" in df.loc[("H1", "m1"), "note"]
    assert df.loc[("H3", "m1"), "ci_high"] > 1.05
    assert "latent < text: no" in df.loc[("H5b", "m1"), "note"]
    h4 = df.loc[("H4", "joint")]
    assert h4["status"] == NOT_MET and h4["estimate"] == pytest.approx(0.5) and pd.isna(h4["ci_low"])
    assert "point estimate" in h4["method"]


def test_not_evaluable_without_a_budget_at_m_or_per_example_joint_picks(tmp_path):
    files = baselines(tmp_path, budgets=(8, 16)) + latent(tmp_path, TEXT_F1, M=12)
    joint = write_joint(tmp_path, "e", {"m1": 0.5, "m2": 0.4}, 0.6)  # +10 points, but no CI possible
    df = table(files, [joint])
    h2 = df.loc[("H2", "m1")]
    assert h2["status"] == NOT_EVALUABLE and "no token budget at M = 12" in h2["note"]
    assert df.loc[("H4", "joint"), "status"] == NOT_EVALUABLE
    assert df.loc[("H1", "m1"), "status"] == MET


def test_different_examples_make_a_comparison_not_evaluable(tmp_path):
    files = baselines(tmp_path) + latent(tmp_path, TEXT_F1, ids=[f"other{i}" for i in range(N)])
    df = table(files)
    assert df.loc[("H1", "m1"), "status"] == NOT_EVALUABLE
    assert "same example ids" in df.loc[("H1", "m1"), "note"]
    assert df.loc[("H4", "joint"), "status"] == NOT_EVALUABLE  # no joint.json


def test_without_latent_experiments_every_hypothesis_is_not_evaluable(tmp_path):
    df = table(baselines(tmp_path)).reset_index()
    assert list(df["hypothesis"]) == ["H1", "H2", "H3", "H4", "H5a", "H5b", "H6"]
    assert set(df["status"]) == {NOT_EVALUABLE}
    assert set(df["note"]) == {"no latent experiment"}


def test_stats_cli_writes_intervals_and_hypotheses(tmp_path):
    files = baselines(tmp_path) + latent(tmp_path, [f - 0.01 for f in TEXT_F1])
    joint = write_joint(tmp_path, "e", {"m1": 0.79}, 0.79)
    out = tmp_path / "tables"
    argv = ["stats", "--metrics", *map(str, files), "--datasets", *["squad"] * len(files),
            "--joint", str(joint), "--joint-datasets", "squad", "--config-json", '{"n_resamples": 200, "seed": 3}',
            "--intervals-csv", str(out / "intervals.csv"), "--intervals-md", str(out / "intervals.md"),
            "--hypotheses-csv", str(out / "hypotheses.csv"), "--hypotheses-md", str(out / "hypotheses.md"),
            "--provenance", str(out / "stats.json")]  # fmt: skip
    assert main(argv) == 0
    iv = pd.read_csv(out / "intervals.csv")
    assert set(iv["n_resamples"]) == {200} and set(iv["seed"]) == {3}
    means = iv[iv["kind"] == "mean"]
    assert len(means) == 4 * len(files)  # F1, EM, NLL, first@1 per system
    deltas = iv[iv["kind"] == "difference"]
    assert set(deltas["reference"]) == {"text", "budget-12", "latent:e:shuffled", "best single (m1)"}
    f1_text = deltas[(deltas["reference"] == "text") & (deltas["metric"] == "f1")].iloc[0]
    assert f1_text["estimate"] == pytest.approx(-1.0)
    md = (out / "hypotheses.md").read_text()
    assert "| H1 | squad | m1 | latent:e | text | **met** |" in md
    assert "200 resamples, seed 3" in (out / "intervals.md").read_text()
    assert '"git_revision"' in (out / "stats.json").read_text()


def test_h6_picks_the_best_discrete_rival_at_no_more_positions_or_bytes(tmp_path):
    lat_f1 = [f - 0.01 for f in TEXT_F1]
    files = baselines(tmp_path) + latent(tmp_path, lat_f1)
    rival = [f - 0.11 for f in TEXT_F1]  # 10 points below the latent
    files.append(
        write_system(tmp_path, "m1", "select-text-12", rival, content_positions=12, payload_id_bytes=27)
    )
    files.append(write_system(tmp_path, "m1", "lexical-12", 0.2, content_positions=12, payload_id_bytes=27))
    # better than the latent but excluded: more positions, more bytes, or the oracle bound
    files.append(write_system(tmp_path, "m1", "tail-16", 1.0, content_positions=16, payload_id_bytes=36))
    files.append(write_system(tmp_path, "m1", "oracle-12", 1.0, content_positions=12, payload_id_bytes=27))
    files.append(write_system(tmp_path, "m1", "selfinfo-12", 1.0, content_positions=12, payload_bytes=5000.0))
    df = table(files)
    h6 = df.loc[("H6", "m1")]
    assert h6["reference"] == "select-text-12" and h6["status"] == MET
    assert h6["estimate"] == pytest.approx(10.0)
    # a tuned discrete ceiling counts as a rival too, and here it beats the latent
    files.append(write_system(tmp_path, "m1", "select-text-12-tuned-s0", TEXT_F1, content_positions=12,
                              payload_id_bytes=27))  # fmt: skip
    h6 = table(files).loc[("H6", "m1")]
    assert h6["reference"] == "select-text-12-tuned-s0" and h6["status"] == NOT_MET


def test_h6_not_evaluable_without_rivals(tmp_path):
    files = baselines(tmp_path, budgets=(48,)) + latent(tmp_path, TEXT_F1, M=12)
    assert table(files).loc[("H6", "m1"), "status"] == NOT_EVALUABLE


def test_intervals_are_clustered_by_article_when_rows_name_it(tmp_path):
    titles = [f"art{i // 8}" for i in range(N)]
    files = [write_system(tmp_path, "m1", "text", TEXT_F1, titles=titles)]
    files += [write_system(tmp_path, "m1", "budget-12", 0.1, content_positions=12, titles=titles)]
    rs = ResultSet.load(files, ["squad"] * len(files))
    from latentwire.analysis.intervals import build_intervals

    iv = build_intervals(rs, ARGS)
    assert iv["method"].str.contains("clustered by article \\(5 articles").all()
    flat = build_intervals(rs, StatsArgs(n_resamples=300, cluster="none"))
    assert not flat["method"].str.contains("clustered").any()
