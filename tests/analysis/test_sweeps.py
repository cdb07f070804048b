"""Encoder sweeps from hand-made metrics and intervals: settings read from the provenance config, budget-M
joined at the latent's own M, pretraining pairs matched on the whole run config, wire variants ordered."""

import pandas as pd
import pytest

from latentwire.analysis.sweeps import bits_table, latent_rows, pf_table, pretraining_table, summary_key
from latentwire.cli.main import main
from latentwire.io import read_json, write_json


def _run(pf: int, m: int, pretrained: str | None = None, steps: int = 300, name: str = "pooled-lm") -> dict:
    enc = {"name": name, "pool_factor": pf, "drop_last": 2, "pretrained": pretrained}
    return {
        "latent": {"n_shared": m, "n_private": 0, "encoder": enc},
        "train": {"steps": steps, "seed": 0},
    }


def _latent(exp: str, run: dict, variant: str, f1: float, model: str = "q") -> dict:
    system = f"latent:{exp}" if variant == "latent" else f"latent:{exp}:{variant}"
    m = {
        "kind": "latent",
        "model": model,
        "system": system,
        "control": variant if variant in ("shuffled", "zero") else "none",
        "f1": f1,
        "payload_bytes": {"int8": 500, "int4": 250, "pq": 16}.get(variant, 1000),
        "text_bytes": 800.0,
        "provenance": {"config": {"exp": exp, "run": run}},
    }
    if variant in ("int8", "int4", "pq"):
        m["wire_format"] = variant
    return m


RUNS = {
    "pf4": _run(4, 64),
    "pf4-pt": _run(4, 64, pretrained="pt"),
    "pf2": _run(2, 128),
    "pf4-long": _run(4, 64, steps=600),  # differs in more than the pretraining: not its pair
}
F1 = {"pf4": 0.10, "pf4-pt": 0.30, "pf2": 0.40, "pf4-long": 0.20}


@pytest.fixture
def files(tmp_path):
    paths, interval_rows = [], []
    for exp, run in RUNS.items():
        for variant in ("latent", "shuffled", "zero", "int4", "int8", "pq"):
            f1 = F1[exp] if variant != "shuffled" else 0.05
            path = tmp_path / exp / variant / "metrics.json"
            write_json(path, _latent(exp, run, variant, f1))
            paths.append(path)
            system = _latent(exp, run, variant, f1)["system"]
            interval_rows.append(("squad", "q", system, "", 100 * f1, 100 * f1 - 5, 100 * f1 + 5))
        budget = f"budget-{run['latent']['n_shared']}"
        interval_rows.append(("squad", "q", f"latent:{exp}", budget, 100 * F1[exp] - 25, -30, -20))
    for m, f1 in ((64, 40.0), (128, 60.0)):
        interval_rows.append(("squad", "q", f"budget-{m}", "", f1, f1 - 5, f1 + 5))
        baseline = tmp_path / f"budget-{m}.json"
        write_json(baseline, {"kind": "baseline", "system": f"budget-{m}", "model": "q", "f1": f1 / 100})
        paths.append(baseline)
    cols = ["dataset", "model", "system", "reference", "estimate", "ci_low", "ci_high"]
    intervals = pd.DataFrame(interval_rows, columns=cols).assign(metric="f1")
    intervals.loc[len(intervals)] = ["squad", "q", "latent:pf4", "", 99.0, 0, 0, "em"]  # another metric
    path = tmp_path / "intervals.csv"
    intervals.to_csv(path, index=False)
    summary = tmp_path / "pretrain" / "squad" / "pt" / "s0" / "pretrain_summary.json"
    write_json(
        summary, {"steps": 250, "heldout_before": {"q": {"loss": 4.0}}, "heldout_after": {"q": {"loss": 2.5}}}
    )
    return paths, path, summary


def test_pf_table_reads_settings_controls_and_budget_at_the_latents_m(files):
    paths, intervals, _ = files
    rows = latent_rows(paths, ["squad"] * len(paths))
    assert len(rows) == 4 * 6  # baselines skipped
    pf = pf_table(rows, pd.read_csv(intervals))
    assert list(pf["experiment"]) == ["pf2", "pf4", "pf4-long", "pf4-pt"]  # by pool factor, then name
    r = pf.set_index("experiment").loc["pf2"]
    assert (r.pool_factor, r.M, r.budget, r.budget_f1) == (2, 128, "budget-128", 60.0)
    assert r.f1 == pytest.approx(40.0) and r.minus_budget == pytest.approx(15.0)
    assert r.shuffled_f1 == pytest.approx(5.0) and r.zero_f1 == pytest.approx(40.0)
    assert pf.set_index("experiment").loc["pf4", "f1"] == pytest.approx(10.0)  # F1, not the EM row


def test_pretraining_pairs_only_runs_that_differ_in_the_pretraining_alone(files):
    paths, intervals, summary = files
    rows = latent_rows(paths, ["squad"] * len(paths))
    pf = pf_table(rows, pd.read_csv(intervals))
    pre = pretraining_table(pf, rows, {summary_key(summary): read_json(summary)})
    assert len(pre) == 1
    r = pre.iloc[0]
    assert (r.experiment, r.without, r.pretrain_steps) == ("pf4-pt", "pf4", 250)
    assert r.checkpoint_step == 250  # a summary without keep: best kept its last step
    assert (r.f1, r.without_f1) == (pytest.approx(30.0), pytest.approx(10.0))
    assert (r.heldout_loss_before, r.heldout_loss_after) == (4.0, 2.5)


def test_bits_table_orders_full_precision_first_and_compares_with_utf8(files):
    paths, intervals, _ = files
    rows = latent_rows(paths, ["squad"] * len(paths))
    bits = bits_table(rows, pd.read_csv(intervals))
    pf4 = bits[bits["experiment"] == "pf4"]
    assert list(pf4["wire"]) == ["fp16", "int8", "int4", "pq"]
    assert list(pf4["payload_bytes"]) == [1000, 500, 250, 16]
    assert pf4["payload_over_text"].iloc[0] == pytest.approx(1000 / 800)
    assert "shuffled" not in set(bits["wire"])


def test_pool_factor_is_empty_for_encoders_that_do_not_pool(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, _latent("sel", _run(4, 48, name="select"), "latent", 0.5))
    assert pd.isna(latent_rows([path], ["squad"])["pool_factor"].iloc[0])


def test_summary_key_and_the_cli(files, tmp_path):
    paths, intervals, summary = files
    assert summary_key(summary) == ("pt", 0)
    with pytest.raises(ValueError, match="s\\{seed\\}"):
        summary_key(tmp_path / "pt" / "seed0" / "pretrain_summary.json")
    out = tmp_path / "sweeps"
    args = ["sweeps", "--metrics", *map(str, paths), "--datasets", *["squad"] * len(paths)]
    args += ["--intervals", str(intervals), "--pretrain-summaries", str(summary), "--out-dir", str(out)]
    assert main(args) == 0
    assert len(pd.read_csv(out / "pf.csv")) == 4 and len(pd.read_csv(out / "bits.csv")) == 16
    assert (out / "sweeps.json").is_file()
    assert main(args[:-2] + ["--datasets", "squad", "--out-dir", str(out)]) == 2  # one name, many files


def test_trimmed_messages_report_their_mean_slots_and_bytes(tmp_path):
    """latent.trim_pad: metrics carry the mean slots sent and mean payload (floats); the tables show
    both beside the cap M; an untrimmed run sends M."""
    paths = []
    for exp, slots in (("trim", 44.6), ("full", None)):
        m = _latent(exp, _run(4, 64), "latent", 0.3)
        if slots is not None:
            m.update(wire_slots=slots, payload_bytes=slots * 896 * 2)
        paths.append(tmp_path / f"{exp}.json")
        write_json(paths[-1], m)
    rows = latent_rows(paths, ["squad"] * 2)
    cols = ["dataset", "model", "system", "reference", "metric", "estimate", "ci_low", "ci_high"]
    intervals = pd.DataFrame(columns=cols)
    pf = pf_table(rows, intervals).set_index("experiment")
    assert (pf.loc["trim", "M"], pf.loc["trim", "slots_sent"], pf.loc["full", "slots_sent"]) == (64, 44.6, 64)
    bits = bits_table(rows, intervals).set_index("experiment")
    assert (
        bits.loc["trim", "payload_bytes"] == round(44.6 * 896 * 2) and bits.loc["trim", "slots_sent"] == 44.6
    )
