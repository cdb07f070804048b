"""Figures are written, as non-empty PNG and SVG files, from hand-made results (and from none)."""

from pathlib import Path

import pytest
from result_files import write_system, write_train_log

from latentwire.analysis import figures
from latentwire.analysis.intervals import build_intervals
from latentwire.analysis.results import ResultSet
from latentwire.analysis.stats import StatsArgs
from latentwire.cli.main import main

NAMES = ("f1-vs-m", "latency", "payload", "training")


@pytest.fixture
def results(tmp_path):
    files = []
    for model in ("m1", "m2"):
        files.append(write_system(tmp_path, model, "text", 0.6, prefill_s=0.2))
        files += [
            write_system(tmp_path, model, f"budget-{b}", 0.1 * b / 8, content_positions=b) for b in (8, 16)
        ]
        files.append(write_system(tmp_path, model, "closed", 0.05, content_positions=20))
        for s in ("latent:e", "latent:e:shuffled", "latent:e:zero", "latent:e:int8"):
            files.append(write_system(tmp_path, model, s, 0.3, content_positions=8, payload_bytes=256.0))
    logs = [write_train_log(tmp_path / "latent" / "squad" / "e" / "train" / "train_log.jsonl", ["m1", "m2"])]
    return tmp_path, files, logs


def _figure_args(out, names=NAMES) -> list[str]:
    argv = []
    for name in names:
        argv += [f"--{name}", str(out / f"{name}.png"), str(out / f"{name}.svg")]
    return argv + ["--provenance", str(out / "figures.json")]


def _assert_written(out):
    for name in NAMES:
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert b"<svg" in svg.read_bytes()[:2000] and svg.stat().st_size > 5000, name


def test_figures_cli_writes_every_figure(results):
    root, files, logs = results
    ivs = root / "intervals.csv"
    build_intervals(ResultSet.load(files, ["squad"] * len(files)), StatsArgs(200)).to_csv(ivs, index=False)
    out = root / "figures"
    argv = ["figures", "--metrics", *map(str, files), "--datasets", *["squad"] * len(files),
            "--intervals", str(ivs), "--train-logs", *map(str, logs), "--train-labels", "squad/e"]  # fmt: skip
    assert main(argv + _figure_args(out)) == 0
    _assert_written(out)
    assert "training.svg" in (out / "figures.json").read_text()


def test_figures_without_results_say_so_instead_of_failing(tmp_path):
    empty = ResultSet()
    ivs = figures.read_intervals(_empty_intervals(tmp_path))
    figures.plot_f1_vs_m(empty, ivs, [tmp_path / "f1-vs-m.png", tmp_path / "f1-vs-m.svg"])
    figures.plot_latency(empty, [tmp_path / "latency.png", tmp_path / "latency.svg"])
    figures.plot_payload(empty, [tmp_path / "payload.png", tmp_path / "payload.svg"])
    figures.plot_training({}, [tmp_path / "training.png", tmp_path / "training.svg"])
    for name in NAMES:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        assert b"<svg" in (tmp_path / f"{name}.svg").read_bytes()[:2000]


def _empty_intervals(tmp_path):
    path = tmp_path / "intervals.csv"
    build_intervals(ResultSet(), StatsArgs(10)).to_csv(path, index=False)
    return path


def test_a_figure_is_written_atomically(tmp_path, monkeypatch):
    """A failure while drawing leaves no partial file and keeps the previous one whole."""
    import matplotlib.pyplot as plt

    out = tmp_path / "f.png"
    out.write_bytes(b"previous")
    fig = plt.figure()

    def broken(self, fname, **kw):
        Path(fname).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(plt.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        figures._save(fig, [out])
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_training_curves_follow_each_receiver_over_its_own_steps(tmp_path, monkeypatch):
    """Stage A0 steps first (no receiver trains), then one receiver per step (train.sample_receiver),
    and a receiver that is only validated: every receiver gets its curves, each over its own steps."""
    import matplotlib.axes

    recs = [{"step": s, "stage": "A0", "encoder": {"aux_loss": 1.0}} for s in (1, 2)]
    for s in range(3, 11):
        name = "m1" if s % 2 else "m2"
        recs.append({"step": s, "stage": "B", name: {"loss": 5.0 - 0.1 * s, "first_acc": 0.5}})
    recs[-1]["val"] = {
        n: {"first_token_top1": 0.4, "unique_prediction_ratio": 0.9} for n in ("m1", "m2", "m3")
    }
    drawn = []
    real = matplotlib.axes.Axes.plot

    def spy(self, x, y, *a, **k):
        drawn.append((k.get("label"), list(x), list(y)))
        return real(self, x, y, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    figures.plot_training({"squad/e": recs}, [tmp_path / "t.png", tmp_path / "t.svg"])
    loss = {label: x for label, x, _ in drawn[::4]}  # the first of each receiver's four lines
    assert loss == {"m1": [3, 5, 7, 9], "m2": [4, 6, 8, 10], "m3": []}
    assert ("m3 (val)", [10], [0.4]) in drawn
