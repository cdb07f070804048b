"""scripts/run_without_snakemake.py: how jobs are grouped and ordered when run N at a time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_without_snakemake.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_without_snakemake", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _job(step: str, log: str) -> tuple:
    return (step, [step], [f"/nonexistent/{log}.out"], log)


def test_chains_keep_each_experiments_train_before_its_eval(runner):
    jobs = [
        _job("baselines", "logs/baselines/squad/m/text.log"),
        _job("baselines", "logs/baselines/squad/m/closed.log"),
        _job("latent", "logs/latent/squad/a/train.log"),
        _job("latent", "logs/latent/squad/a/eval.log"),
        _job("latent", "logs/latent/squad/b/train.log"),
        _job("latent", "logs/latent/squad/b/eval.log"),
    ]
    chains = runner.chains(jobs)
    assert [[j[3] for j in c] for c in chains] == [
        ["logs/baselines/squad/m/text.log"],
        ["logs/baselines/squad/m/closed.log"],
        ["logs/latent/squad/a/train.log", "logs/latent/squad/a/eval.log"],
        ["logs/latent/squad/b/train.log", "logs/latent/squad/b/eval.log"],
    ]


def test_a_failed_train_skips_its_eval(runner, monkeypatch):
    ran = []

    def fake(job, dry_run):
        ran.append(job[3])
        return 1 if job[3].endswith("train.log") else 0

    monkeypatch.setattr(runner, "run_job", fake)
    chain = [_job("latent", "logs/latent/squad/a/train.log"), _job("latent", "logs/latent/squad/a/eval.log")]
    assert runner.run_chain(chain, False) == 1
    assert ran == ["logs/latent/squad/a/train.log"]


def test_dry_run_lists_every_experiment_of_the_gpu_overlay(runner, monkeypatch, capsys):
    monkeypatch.chdir(SCRIPT.parents[1])
    monkeypatch.setattr(
        "sys.argv",
        ["x", "--dry-run", "--jobs", "4", "--configfile", "config/config.yaml", "config/gpu-ablations.yaml"],
    )
    runner.main()
    out = capsys.readouterr().out
    for exp in ("select-m48-coproc", "lm-hidden-m48", "prefix-tuning-m48"):
        assert f"logs/latent/squad/{exp}/eval.log" in out or Path(f"results/latent/squad/{exp}").exists()
    assert out.strip().endswith('{"done": true}')


def test_dry_run_of_the_pooled_overlay_pretrains_before_fine_tuning(runner, monkeypatch, capsys):
    monkeypatch.chdir(SCRIPT.parents[1])
    monkeypatch.setattr(
        "sys.argv",
        ["x", "--dry-run", "--configfile", "config/config.yaml", "config/gpu-pooled.yaml"],
    )
    runner.main()
    out = capsys.readouterr().out
    lines = out.splitlines()
    pre = [i for i, line in enumerate(lines) if "pretrain: pretrain-encoder" in line]
    train = [i for i, line in enumerate(lines) if "logs/latent/squad/pooled-pf4/train.log" in line]
    if not Path("results/pretrain/squad/arc-pf8/s0/encoder.safetensors").exists():
        assert len(pre) == 3 and train and max(pre) < min(train)  # seeds 0, 1, 2, before any latent job
    assert out.strip().endswith('{"done": true}')
