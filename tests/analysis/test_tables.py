"""Results tables from hand-made metrics.json files: row order, medians, Markdown formatting."""

import json

import pandas as pd
import pytest

from latentwire.analysis.tables import COLUMNS, gather, to_markdown
from latentwire.io import write_json


def _metrics(system: str, model: str = "m1", **extra) -> dict:
    return {
        "system": system,
        "model": model,
        "n": 10,
        "em": 0.25,
        "f1": 0.5,
        "nll_per_token": 1.234,
        "prefill_ms": {"median": 12.0, "p90": 30.0, "mean": 15.0},
        "provenance": {"git_revision": "abc"},  # extra keys are ignored
        **extra,
    }


@pytest.fixture
def metric_files(tmp_path):
    systems = [
        ("closed", "m1"),
        ("budget-16", "m1"),
        ("text", "m1"),
        ("budget-8", "m1"),
        ("softtok-p32", "m1"),
    ]
    systems += [("closed", "m0"), ("text", "m0")]
    paths = []
    for i, (system, model) in enumerate(systems):
        path = tmp_path / f"{i}" / "metrics.json"
        write_json(path, _metrics(system, model))
        paths.append(path)
    return paths


def test_gather_orders_text_budgets_by_m_latents_closed_last(metric_files):
    df = gather(metric_files, ["squad"] * len(metric_files))
    assert list(df.columns) == [k for k, _ in COLUMNS]
    assert list(zip(df["model"], df["system"])) == [
        ("m0", "text"),
        ("m0", "closed"),
        ("m1", "text"),
        ("m1", "budget-8"),  # by M, not alphabetically (budget-16 < budget-8 as strings)
        ("m1", "budget-16"),
        ("m1", "softtok-p32"),
        ("m1", "closed"),
    ]
    assert (df["dataset"] == "squad").all()


def test_gather_takes_medians_and_leaves_missing_values_empty(metric_files):
    df = gather(metric_files[:1], ["squad"])
    row = df.iloc[0]
    assert row["prefill_ms"] == 12.0  # the median of a summary dict
    assert row["f1"] == 0.5 and row["n"] == 10
    assert pd.isna(row["compression"])


def test_gather_groups_by_dataset(tmp_path):
    paths = []
    for i, system in enumerate(["closed", "text", "text"]):
        paths.append(tmp_path / f"{i}.json")
        write_json(paths[-1], _metrics(system))
    df = gather(paths, ["squad", "squad", "hotpot"])
    assert list(zip(df["dataset"], df["system"])) == [
        ("hotpot", "text"),
        ("squad", "text"),
        ("squad", "closed"),
    ]
    # Without explicit names the dataset comes from the metrics file itself.
    write_json(tmp_path / "d.json", _metrics("text", dataset="hotpot"))
    assert gather([tmp_path / "d.json"])["dataset"].tolist() == ["hotpot"]


def test_to_markdown(metric_files):
    df = gather(metric_files[:3], ["squad"] * 3)
    md = to_markdown(df, "Baselines")
    lines = md.strip().splitlines()
    assert lines[0] == "## Baselines"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == [h for _, h in COLUMNS]
    assert lines[3] == "|" + "---|" * len(COLUMNS)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert [r[2] for r in rows] == ["text", "budget-16", "closed"]
    first = dict(zip([k for k, _ in COLUMNS], rows[0]))
    assert first["em"] == "25.0" and first["f1"] == "50.0"  # percentages
    assert first["nll_per_token"] == "1.23" and first["prefill_ms"] == "12.00"
    assert first["compression"] == "" and first["first_token_top1"] == ""  # missing -> empty cell
    assert first["batch_size"] == ""
    # A value only some files have: NaN elsewhere, also an empty cell.
    write_json(metric_files[0], _metrics("closed", compression=2.5, batch_size=32))
    mixed = to_markdown(gather(metric_files[:3], ["squad"] * 3))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in mixed.strip().splitlines()[2:]]
    assert [r[11] for r in cells] == ["", "", "2.50"]
    batch = [k for k, _ in COLUMNS].index("batch_size")
    assert [r[batch] for r in cells] == ["", "", "32"]  # a count, not 32.00
    assert first["n"] == "10"
    assert not to_markdown(df).startswith("##")


def test_shares_of_the_tuned_ceiling_and_of_text(tmp_path):
    from latentwire.analysis.tables import gather

    files = []
    for system, f1 in (("text", 0.5), ("text-tuned-s0", 0.6), ("text-tuned-s1", 0.8), ("latent:e", 0.35)):
        d = tmp_path / system
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"system": system, "model": "m", "f1": f1, "em": 0.0}))
        files.append(d / "metrics.json")
    df = gather(files, ["squad"] * 4).set_index("system")
    assert df.loc["latent:e", "share_tuned"] == pytest.approx(0.35 / 0.7)  # mean over tuned seeds
    assert df.loc["latent:e", "share_text"] == pytest.approx(0.7)
    assert "F1 / text-tuned" in to_markdown(df.reset_index())
