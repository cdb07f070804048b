"""The Snakemake workflow, run as a subprocess: lint, dry runs, parse-time validation, and one
full run of the tiny ``.test`` scenario (about 1-2 minutes on 2 CPU cores)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
BASE_CELLS = (
    12  # .test: 3 tiny models (tiny-gemma added to select's wire) x (text, budget-8, budget-16, closed)
)
# ... plus the rivals at the latents' M (meanpool reads 6 slots, select 8): budget-6 and tail / lexical /
# selfinfo / oracle at 6 and 8, select-text-8 (select's kept tokens); tiny-gemma only those at 8
BASELINE_CELLS = BASE_CELLS + 2 * 10 + 5
# .test: 2 tiny models x 2 experiments x (latent, shuffled, zero, int8), and tiny-gemma's 4 on select
LATENT_CELLS = 16 + 4
TUNED_CELLS = 6  # .test: 3 tiny models x (text-tuned, select-text-8-tuned), seed 0
ADDED = "latent:select+tiny-gemma"  # the newcomer's latent system (latent.extensions.gemma)
FIGURES = ("f1_vs_m", "latency", "payload", "training")
# .test's latent runs' folders (latentwire.plan.paths.LATENT): encoder, M, d_z, head, preset, seed
MEANPOOL = "results/latent/squad/meanpool/M6-dz16/shallow/meanpool/seed0"
SELECT = "results/latent/squad/select/M8-dz16/shallow/select/seed0"


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake -s workflow/Snakefile ARGS``; stdout and stderr come back together."""
    env = {
        **os.environ,
        # Rules call the `latentwire` console script: it lives next to this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


def job_stats(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a (dry) run as {rule: count}, without the total."""
    lines = output.split("Job stats:", 1)[1].splitlines()
    stats = {}
    for line in lines[3:]:  # skip the header and the dashes
        m = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not m:
            break
        stats[m.group(1)] = int(m.group(2))
    stats.pop("total")
    return stats


def copy_scenario(dest: Path) -> Path:
    """A copy of the .test scenario's inputs (config and data), without any results."""
    for sub in ("config", "data"):
        shutil.copytree(REPO / ".test" / sub, dest / sub)
    return dest


def test_lint_is_clean():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout
    assert "Congratulations, your workflow is in a good condition!" in res.stdout


def test_dry_run_of_the_main_config():
    res = snakemake("-n", "--nolock")
    assert res.returncode == 0, res.stdout
    assert "This was a dry-run" in res.stdout or "Nothing to be done" in res.stdout


def test_config_typo_fails_at_parse_time(tmp_path):
    work = copy_scenario(tmp_path)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["eval"]["batch_sizee"] = cfg["eval"].pop("batch_size")
    cfg_path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--directory", str(work))
    assert res.returncode != 0
    assert "eval.batch_sizee: unknown key" in res.stdout
    assert "Job stats" not in res.stdout  # nothing was scheduled


@pytest.fixture(scope="module")
def test_run(tmp_path_factory) -> Path:
    """The .test scenario, run once end to end in a temporary folder."""
    work = copy_scenario(tmp_path_factory.mktemp("dot-test"))
    res = snakemake("--directory", str(work), "--cores", "2", timeout=1800)
    assert res.returncode == 0, res.stdout[-5000:]
    return work


def test_full_run_writes_the_table_and_provenance(test_run):
    metrics = sorted((test_run / "results").rglob("metrics.json"))
    baselines = sorted((test_run / "results" / "baselines").rglob("metrics.json"))
    assert len(baselines) == BASELINE_CELLS
    table = test_run / "results" / "tables" / "results.csv"
    df = pd.read_csv(table)
    assert len(df) == len(metrics)
    assert (df["system"].isin(["text", "budget-8", "budget-16", "closed"])).sum() == BASE_CELLS
    assert {"tail-6", "lexical-8", "selfinfo-6", "oracle-8", "select-text-8"} <= set(df["system"])
    assert {"text-tuned-s0", "select-text-8-tuned-s0"} <= set(df["system"])
    for _, g in df.groupby("model"):  # the share of text-tuned: 1 for itself, undefined when its F1 is 0
        tuned = g[g["system"] == "text-tuned-s0"].iloc[0]
        if tuned["f1"] > 0:
            assert tuned["share_tuned"] == pytest.approx(1.0)
        else:
            assert g["share_tuned"].isna().all()
    assert set(df["model"]) == {"tiny-llama", "tiny-qwen2", "tiny-gemma"} and set(df["dataset"]) == {"squad"}
    # the newcomer's rows: its latent and controls beside its own text, budget-8 and comparators
    gemma = set(df.loc[df["model"] == "tiny-gemma", "system"])
    assert {ADDED, f"{ADDED}:shuffled", f"{ADDED}:zero", f"{ADDED}:int8"} <= gemma
    assert {"text", "budget-8", "select-text-8", "selfinfo-8", "text-tuned-s0"} <= gemma
    assert not any(s.endswith("-6") for s in gemma)  # no rivals at meanpool's M: it did not join meanpool
    assert table.with_suffix(".md").is_file()
    for path in metrics:
        m = json.loads(path.read_text())
        prov = m["provenance"]
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_revision"]), path
        assert isinstance(prov["config"], dict) and prov["config"], path
        assert {"torch", "transformers", "latentwire"} <= set(prov["packages"]), path
        assert m["n"] > 0 and 0.0 <= m["f1"] <= 1.0
    for path in baselines:
        m = json.loads(path.read_text())
        assert m["system"] == path.parent.name == m["provenance"]["config"]["baseline"]["name"]
        assert m["model"] == path.parent.parent.name
        rows = [json.loads(line) for line in path.with_name("predictions.jsonl").read_text().splitlines()]
        assert len(rows) == m["n"]


def test_second_invocation_has_nothing_to_do(test_run):
    res = snakemake("-n", "--directory", str(test_run))
    assert res.returncode == 0, res.stdout
    assert "Nothing to be done" in res.stdout, res.stdout[-3000:]


def test_changing_one_budget_schedules_only_its_jobs(test_run, tmp_path):
    override = tmp_path / "override.yaml"  # --configfile values override the Snakefile's configfile
    override.write_text(yaml.safe_dump({"baselines": {"budgets": [8, 12]}}))
    res = snakemake("-n", "--directory", str(test_run), "--configfile", str(override))
    assert res.returncode == 0, res.stdout
    stats = job_stats(res.stdout)
    assert stats.pop("baseline") == 3  # budget-12, once per model (the added tiny-gemma too)
    assert stats.pop("all") == 1
    # plus the aggregates (results table, intervals/hypotheses, sweeps, figures), once each, and nothing else
    assert stats == {"results_table": 1, "stats_tables": 1, "sweep_tables": 1, "table_figures": 1}
    outputs = {
        path
        for line in res.stdout.splitlines()
        if line.strip().startswith("output:")
        for path in line.split(":", 1)[1].strip().split(", ")
    }
    assert {p for p in outputs if p.startswith("results/baselines/")} == {
        f"results/baselines/squad/{model}/budget-12/{name}"
        for model in ("tiny-llama", "tiny-qwen2", "tiny-gemma")
        for name in ("predictions.jsonl", "metrics.json")
    }


def test_full_run_writes_intervals_hypotheses_figures_and_a_report(test_run, tmp_path):
    tables, figs = test_run / "results" / "tables", test_run / "results" / "figures"
    n_systems = len(list((test_run / "results").rglob("metrics.json")))
    assert n_systems == BASELINE_CELLS + LATENT_CELLS + TUNED_CELLS
    iv = pd.read_csv(tables / "intervals.csv")
    assert (iv["kind"] == "mean").sum() == 4 * n_systems  # F1, EM, NLL/tok, first@1 per system
    assert set(iv["n_resamples"]) == {1000} and set(iv["seed"]) == {0} and set(iv["alpha"]) == {0.05}
    refs = set(iv.loc[iv["kind"] == "difference", "reference"])
    assert {"text", "latent:meanpool:shuffled", "select-text-8", "text-tuned-s0"} <= refs
    assert iv["method"].dropna().str.contains("clustered by article").any()
    added = iv[(iv["kind"] == "difference") & (iv["system"] == ADDED)]
    assert set(added["model"]) == {"tiny-gemma"}
    assert {"text", "budget-8", "select-text-8", "text-tuned-s0", f"{ADDED}:shuffled"} <= set(
        added["reference"]
    )
    assert "joint:select+tiny-gemma" in set(iv["system"])  # rescoring over all three receivers
    hy = pd.read_csv(tables / "hypotheses.csv")
    # H1-H3, H5a, H5b, H6 per model and experiment (tiny-gemma's on select's wire too), H4 per wire
    assert len(hy) == (2 * 2 + 1) * 6 + 3
    assert set(hy.loc[hy["hypothesis"] == "H6", "status"]) <= {"met", "not met"}  # rivals exist at 6 and 8
    assert set(hy["status"]) <= {"met", "not met", "not evaluable"}
    assert (tables / "intervals.md").is_file() and (tables / "hypotheses.md").is_file()
    assert json.loads((tables / "stats.json").read_text())["stats"]["n_resamples"] == 1000
    pf = pd.read_csv(tables / "sweeps" / "pf.csv")  # one full-precision row per latent run and receiver
    assert len(pf) == len(
        iv[(iv["kind"] == "mean") & (iv["metric"] == "f1") & iv["system"].str.fullmatch(r"latent:[^: ]+")]
    )
    assert (tables / "sweeps" / "bits.csv").is_file() and (tables / "sweeps" / "pretraining.csv").is_file()
    for name in FIGURES:
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.svg").stat().st_size > 1000
    report = tmp_path / "report.html"
    res = snakemake("--directory", str(test_run), "--report", str(report))
    assert res.returncode == 0, res.stdout[-3000:]
    assert report.stat().st_size > 10_000


def test_full_run_adds_tiny_gemma_to_selects_wire(test_run):
    """latent.extensions.gemma: only tiny-gemma's head trained, on select's frozen and hash-checked
    checkpoint; the old receivers' predictions equal select's own evaluation (wire_check.json)."""
    from latentwire.training.extend import file_sha256

    folder = test_run / "results" / "extend" / "squad" / "select+tiny-gemma"
    check = json.loads((folder / "eval" / "wire_check.json").read_text())
    assert sorted(check["old_receivers"]) == ["tiny-llama", "tiny-qwen2"]
    assert all(v["identical_to_reference"] for v in check["old_receivers"].values())
    rec = json.loads((folder / "train" / "extension.json").read_text())
    source = test_run / SELECT / "stage_b" / "best.safetensors"
    assert rec["source_sha256"] == file_sha256(source) and rec["frozen_verified"]
    assert rec["trainable_keys"] and all(k.startswith("adapters.tiny-gemma.") for k in rec["trainable_keys"])
    m = json.loads((folder / "eval" / "tiny-gemma" / "int8" / "metrics.json").read_text())
    assert m["system"] == f"{ADDED}:int8" and m["provenance"]["config"]["source_exp"] == "select"
    old = json.loads((test_run / SELECT / "stage_c/tiny-qwen2/latent/metrics.json").read_text())
    assert (
        json.loads((folder / "eval/tiny-gemma/latent/metrics.json").read_text())["payload_bytes"]
        == (old["payload_bytes"])
    )  # the same wire: no new slot


def test_main_config_runs_one_cpu_sized_latent_experiment_by_default():
    import yaml

    from latentwire.workflow import WorkflowPlan

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.yaml")
    plan = WorkflowPlan.from_config(cfg)
    assert list(plan.experiments) == ["select-m48"]
    run = plan.experiments["select-m48"]
    # a laptop run: the scorer (Stage A0, no receiver forward), then only the small receiver's reading
    # head with the encoder frozen (Qwen's forward + backward does not fit 2 cores), at budget-48's positions
    assert 0 < run.train.encoder_warmup_steps < run.train.steps <= 2 * run.train.encoder_warmup_steps
    assert run.train.stage_b_models == ["smollm2-135m"] and not run.train.stage_b_encoder
    assert run.latent.read_slots() == 48 and "budget-48" in plan.baselines
    assert run.latent.encoder.source_model in plan.models  # no extra model to materialize


def test_sweep_experiments_join_the_plan(tmp_path):
    import yaml

    from latentwire.workflow import WorkflowPlan

    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["registry"] = str(REPO / ".test" / "config" / "models.yaml")
    cfg["latent"]["sweep"] = {"n_shared": [2, 4], "seed": [0, 1]}
    plan = WorkflowPlan.from_config(cfg)
    assert {e for e in plan.experiments if e.startswith("sweep-")} == {
        "sweep-shared_2-s_0",
        "sweep-shared_2-s_1",
        "sweep-shared_4-s_0",
        "sweep-shared_4-s_1",
    }
    assert plan.experiments["sweep-shared_4-s_1"].train.seed == 1
    assert plan.experiments["sweep-shared_4-s_1"].latent.n_shared == 4
    assert plan.experiments["sweep-shared_2-s_0"].train.steps == plan.experiments["meanpool"].train.steps


def test_sweep_over_m_sets_the_slots_each_receiver_reads_and_schedules_budget_m(tmp_path):
    """M is what a receiver reads (n_shared + n_private): the sweep sets n_shared = M − n_private
    and the plan adds budget-M beside each experiment; an M not above n_private fails at parse time."""
    from latentwire.config import ConfigError
    from latentwire.workflow import WorkflowPlan

    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["registry"] = str(REPO / ".test" / "config" / "models.yaml")
    n_private = WorkflowPlan.from_config(cfg).experiments["meanpool"].latent.n_private
    cfg["latent"]["sweep"] = {"M": [n_private + 3, n_private + 5]}
    plan = WorkflowPlan.from_config(cfg)
    for m in (n_private + 3, n_private + 5):
        run = plan.experiments[f"sweep-M_{m}"]
        assert run.latent.read_slots() == m and run.latent.n_shared == m - n_private
        assert f"budget-{m}" in plan.baselines
    cfg["latent"]["sweep"] = {"M": [n_private]}
    with pytest.raises(ConfigError, match="latent.sweep.M"):
        WorkflowPlan.from_config(cfg)


def test_latent_drop_removes_experiments_an_overlay_does_not_want():
    """An overlay merged over config.yaml can drop an inherited (or swept) experiment by name."""
    import yaml

    from latentwire.config import ConfigError
    from latentwire.workflow import WorkflowPlan

    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["registry"] = str(REPO / ".test" / "config" / "models.yaml")
    cfg["latent"]["sweep"] = {"n_shared": [2, 4]}
    cfg["latent"]["drop"] = ["sweep-shared_2", "meanpool"]
    plan = WorkflowPlan.from_config(cfg)
    assert "sweep-shared_4" in plan.experiments
    assert not {"sweep-shared_2", "meanpool"} & set(plan.experiments)
    cfg["latent"]["drop"] = ["nope"]
    with pytest.raises(ConfigError, match=r"latent.drop: \['nope'\] are not experiments"):
        WorkflowPlan.from_config(cfg)


def test_encoder_source_model_that_is_not_a_receiver_joins_the_jobs(tmp_path):
    """Its manifest is materialized and passed to the latent jobs; an unknown name fails at parse time."""
    from latentwire.config import ConfigError
    from latentwire.workflow import WorkflowPlan

    work = copy_scenario(tmp_path)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.pop("comparators", None)  # its tuned ceilings name .test's select experiment
    cfg["latent"].pop("extensions", None)  # and so does its added receiver
    cfg["models"] = ["tiny-llama"]
    cfg["latent"]["experiments"] = {
        "meanpool": {},
        "hidden": {
            "latent": {"encoder": {"name": "lm-hidden", "source_model": "tiny-qwen2", "source_layer": 1}}
        },
        "own": {"latent": {"encoder": {"name": "embed", "source_model": "tiny-llama"}}},
    }
    plan_cfg = {**cfg, "registry": str(work / "config" / "models.yaml")}
    plan = WorkflowPlan.from_config(plan_cfg)
    assert plan.encoder_sources() == ["tiny-qwen2"]
    assert plan.encoder_manifest("hidden") == ["resources/models/tiny-qwen2/manifest.json"]
    assert plan.encoder_manifest("own") == plan.encoder_manifest("meanpool") == []

    cfg_path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--directory", str(work))
    assert res.returncode == 0, res.stdout[-3000:]
    assert job_stats(res.stdout)["materialize_model"] == 2  # the receiver and the source model
    cmds = [
        line for line in res.stdout.splitlines() if "latentwire train-latent" in line or "eval-latent" in line
    ]
    assert len(cmds) == 9  # stage_a, stage_b, stage_c of 3 experiments
    for cmd in cmds:
        has_manifest = "--encoder-manifest resources/models/tiny-qwen2/manifest.json" in cmd
        assert has_manifest == ("--exp hidden" in cmd), cmd

    bad = {
        **plan_cfg,
        "latent": {"experiments": {"x": {"latent": {"encoder": {"name": "embed", "source_model": "nope"}}}}},
    }
    with pytest.raises(ConfigError, match="x.latent.encoder.source_model: 'nope' not in registry"):
        WorkflowPlan.from_config(bad)


def test_kd_experiments_read_teacher_caches_built_once_per_model(tmp_path):
    """Only experiments with loss.w_kd > 0 get the teacher_logits outputs as inputs; a KD experiment
    that does not fit the cache (K, prompt contract) fails at parse time."""
    from latentwire.config import ConfigError, from_dict
    from latentwire.training.teacher import TeacherRunArgs
    from latentwire.workflow import WorkflowPlan

    work = copy_scenario(tmp_path)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.pop("comparators", None)  # its tuned ceilings name .test's select experiment
    cfg["latent"].pop("extensions", None)  # and so does its added receiver
    cfg["teacher"] = {"top_k": 8, "k_tokens": 3}
    cfg["latent"]["experiments"] = {"meanpool": {}, "kd": {"loss": {"w_kd": 0.5, "k_tokens": 3}}}
    plan_cfg = {**cfg, "registry": str(work / "config" / "models.yaml")}
    plan = WorkflowPlan.from_config(plan_cfg)
    assert plan.teacher_inputs("squad", "meanpool") == []
    assert plan.teacher_inputs("squad", "kd") == [
        "results/teacher/squad/tiny-llama/train.safetensors",
        "results/teacher/squad/tiny-qwen2/train.safetensors",
    ]
    job = from_dict(TeacherRunArgs, json.loads(plan.teacher_json()), where="teacher")
    assert (job.teacher.top_k, job.teacher.k_tokens, job.device) == (8, 3, "cpu")

    cfg_path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--directory", str(work))
    assert res.returncode == 0, res.stdout[-3000:]
    assert job_stats(res.stdout)["teacher_logits"] == 2  # once per model, shared by KD experiments
    trains = [line for line in res.stdout.splitlines() if "latentwire train-latent" in line]
    assert len(trains) == 4  # stage_a and stage_b of 2 experiments
    for cmd in trains:
        caches = "--teacher-logits results/teacher/squad/tiny-llama/train.safetensors"
        caches += " results/teacher/squad/tiny-qwen2/train.safetensors "
        assert (caches in cmd) == ("--exp kd" in cmd), cmd

    for bad, match in (
        ({"loss": {"w_kd": 0.5, "k_tokens": 4}}, r"kd.loss.k_tokens: 4 > teacher.k_tokens \(3\)"),
        (
            {"loss": {"w_kd": 0.5, "k_tokens": 2}, "prompt": {"answer_prefix": "A:"}},
            "kd.prompt: an experiment",
        ),
    ):
        cfg["latent"]["experiments"]["kd"] = bad
        with pytest.raises(ConfigError, match=match):
            WorkflowPlan.from_config({**cfg, "registry": plan_cfg["registry"]})
    cfg["teacher"] = {"top_kk": 8}
    cfg["latent"]["experiments"]["kd"] = {}
    with pytest.raises(ConfigError, match="teacher.top_kk: unknown key"):
        WorkflowPlan.from_config({**cfg, "registry": plan_cfg["registry"]})


def test_every_job_that_builds_prompts_gets_the_train_split_for_shots(tmp_path):
    """With a base-model registry override that uses shots, every job that builds a model's inputs
    is handed the train split (the only source of shots), the added receiver's jobs (.test's
    extension of select's wire) included; select_windows, which reads only the encoder's content
    text, is not."""
    work = copy_scenario(tmp_path)
    reg_path = work / "config" / "models.yaml"
    registry = yaml.safe_load(reg_path.read_text())
    registry["models"]["tiny-llama"]["chat_template"] = "plain"
    registry["models"]["tiny-llama"]["prompt"] = {"style": "completion", "shots": 2}
    reg_path.write_text(yaml.safe_dump(registry))
    res = snakemake("-n", "-p", "--directory", str(work))
    assert res.returncode == 0, res.stdout[-3000:]
    train = "results/data/squad/train.parquet"
    names = ("baseline", "train-latent", "eval-latent", "add-receiver", "eval-added-receiver", "tune-text")
    cmds = {name: [] for name in (*names, "eval-tuned")}
    for line in res.stdout.splitlines():
        for name, found in cmds.items():
            if f"latentwire {name} " in line:
                found.append(line)
    assert all(cmds.values()), {k: len(v) for k, v in cmds.items()}
    for name, found in cmds.items():
        flag = "--train" if name in ("train-latent", "add-receiver", "tune-text") else "--shots-from"
        for cmd in found:
            assert re.search(rf"{flag} '?{re.escape(train)}'?( |$)", cmd), cmd
    windows = [line for line in res.stdout.splitlines() if "latentwire select-windows" in line]
    assert windows and not any("--shots-from" in cmd for cmd in windows)


# --- resume under Snakemake (issue 16) ------------------------------------------------------------

TRAIN_SUMMARY = f"{MEANPOOL}/stage_b/train_summary.json"
TRAIN_LOG = Path("logs", *Path(MEANPOOL).parts[1:], "stage_b.log")
KILL_STEPS = 20  # checkpoints every 2 steps: long enough to be killed after the first one


def _train_pids(work: Path) -> list[int]:
    """Pids of this scenario's `latentwire train-latent` processes (their working folder is ``work``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                b"train-latent" in (proc / "cmdline").read_bytes()
                and (proc / "cwd").resolve() == work.resolve()
            ):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _train_log_steps(work: Path) -> list[int]:
    path = work / MEANPOOL / "stage_b" / "train_log.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> Path:
    """kill -9 of stage_b after its first checkpoint; Snakemake fails the job and deletes its
    outputs; a plain rerun must resume from the state folder (not from stage_a's handoff) and finish
    with a whole 1..N log."""
    import signal
    import time

    work = copy_scenario(tmp_path_factory.mktemp("kill"))
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["latent"]["defaults"]["train"].update(steps=KILL_STEPS, eval_every=2, val_examples=2)
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(work)]
    cmd += ["--cores", "2", TRAIN_SUMMARY]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    state = work / MEANPOOL.replace("results/", "results/state/", 1) / "stage_b"
    deadline = time.time() + 600
    while not list(state.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    pids = _train_pids(work)
    assert pids, "train-latent never checkpointed"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out[-3000:]
    assert not (work / TRAIN_SUMMARY).exists()
    first = torch.load(next(state.glob("*/checkpoint.pt")), weights_only=True)["step"]
    assert 2 <= first < KILL_STEPS
    res = snakemake("--directory", str(work), "--cores", "2", TRAIN_SUMMARY, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:]
    return work


def test_a_killed_training_job_resumes_under_snakemake_to_a_whole_log(killed_and_resumed):
    work = killed_and_resumed
    assert _train_log_steps(work) == list(range(1, KILL_STEPS + 1))
    summary = json.loads((work / TRAIN_SUMMARY).read_text())
    assert summary["steps"] == KILL_STEPS and summary["stopped"] == "completed"
    assert (work / TRAIN_SUMMARY).with_name("best.safetensors").is_file()
    assert re.search(r"resuming from step [1-9]", (work / TRAIN_LOG).read_text())
    # a further rerun has nothing to do (no 'resumes from step N' loop)
    res = snakemake("-n", "--directory", str(work), TRAIN_SUMMARY)
    assert "Nothing to be done" in res.stdout, res.stdout[-3000:]


def test_a_changed_setting_after_a_finished_run_trains_afresh_under_snakemake(killed_and_resumed, tmp_path):
    work = killed_and_resumed
    before = json.loads((work / TRAIN_SUMMARY).read_text())["state"]
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"latent": {"experiments": {"meanpool": {"loss": {"w_first": 1.5}}}}}))
    res = snakemake("--directory", str(work), "--cores", "2", TRAIN_SUMMARY, "--configfile", str(override))
    assert res.returncode == 0, res.stdout[-5000:]
    summary = json.loads((work / TRAIN_SUMMARY).read_text())
    assert summary["state"] != before and summary["steps"] == KILL_STEPS
    assert _train_log_steps(work) == list(range(1, KILL_STEPS + 1))
    assert not re.search(r"resuming from step [1-9]", (work / TRAIN_LOG).read_text())


def test_pretraining_runs_once_per_seed_and_starts_the_experiments_that_name_it(tmp_path):
    """pretrain_encoder jobs per (run, seed) some experiment names; stage_a and stage_b get the
    checkpoint, stage_c the train split when a learned wire quantizer is evaluated; the rivals come at every
    pooled M (a factor cap or a fixed M) beside the scenario's select experiment, whose select-text-8
    stays at its own M, and the tuned ceilings copy the pooled experiment; mismatches fail at parse."""
    from latentwire.config import ConfigError
    from latentwire.workflow import WorkflowPlan

    work = copy_scenario(tmp_path)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    enc = {"name": "pooled-lm", "source_model": "tiny-qwen2", "d_z": 16, "drop_last": 0, "train_layers": 1}
    cfg["pretrain"] = {
        "defaults": {"pretrain": {"steps": 2, "batch_size": 2}},
        "runs": {"p8": {"latent": {"n_shared": 4, "n_private": 0, "encoder": {**enc, "pool_factor": 8}}}},
    }
    pooled = {  # M = ceil(tokens / 4) up to the cap of 5 slots
        "latent": {"n_shared": 5, "n_private": 0, "encoder": {**enc, "pool_factor": 4, "pretrained": "p8"}}
    }
    cfg["latent"]["defaults"]["latent"]["wire"] = {"formats": ["int8", "int4", "pq"], "pq_subvectors": 4}
    # .test's comparators stay (select-text from its select experiment); the ceilings train like pooled
    cfg["comparators"]["tuned"]["like"] = "pooled"
    cfg["latent"]["experiments"] = {
        "meanpool": {},
        "select": cfg["latent"]["experiments"]["select"],
        "pooled": pooled,
        "pooled-s1": {**pooled, "train": {"seed": 1}},
        "pooled-scratch": {"latent": {**pooled["latent"], "encoder": {**enc, "pool_factor": 4}}},
        "pooled-fixed": {"latent": {"n_shared": 3, "n_private": 0, "encoder": {**enc, "pool_mode": "fixed"}}},
    }
    plan_cfg = {**cfg, "registry": str(work / "config" / "models.yaml")}
    plan = WorkflowPlan.from_config(plan_cfg)
    rivals = [f"{k}-{m}" for m in (3, 5, 6) for k in ("budget", "tail", "lexical", "selfinfo", "oracle")]
    assert plan.baselines == ["text", "budget-8", "budget-16", "closed", *rivals, "tail-8", "lexical-8",
                              "selfinfo-8", "select-text-8", "oracle-8"]  # fmt: skip
    tuned = {(k, s) for _, _, k, s in plan.tuned_cells()}
    assert tuned == {("text", 0), ("select-text-8", 0)}
    pooled_steps = plan.experiments["pooled"].train.steps  # no encoder warm-up: all of it is Stage B
    select = plan.experiments["select"].train
    assert pooled_steps != select.steps - select.encoder_warmup_steps
    assert json.loads(plan.tuned_json("text", 0))["train"]["steps"] == pooled_steps
    assert plan.pretrain_cells() == [("squad", "p8", 0), ("squad", "p8", 1)]
    assert plan.pretrain_checkpoint("squad", "pooled-s1") == [
        "results/pretrain/squad/p8/s1/encoder.safetensors"
    ]
    assert (
        plan.pretrain_checkpoint("squad", "pooled-scratch")
        == plan.pretrain_checkpoint("squad", "meanpool")
        == []
    )
    assert json.loads(plan.pretrain_json("p8", 1))["pretrain"]["seed"] == 1
    assert json.loads(plan.pretrain_json("p8", 1))["device"] == "cpu"  # eval.device by default
    assert plan.latent_variants == ("latent", "shuffled", "zero", "int8", "int4", "pq")
    assert plan.wire_fit_data("squad", "pooled") == ["results/data/squad/train.parquet"]

    cfg_path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--directory", str(work))
    assert res.returncode == 0, res.stdout[-3000:]
    stats = job_stats(res.stdout)
    assert [stats[r] for r in ("pretrain_encoder", "stage_a", "stage_b", "stage_c")] == [2, 6, 6, 6]
    # 2 kinds × 3 receivers (.test's extension adds tiny-gemma to select's wire, with its own ceilings);
    # select's kept tokens on train / validation / test
    assert (stats["tune_text"], stats["eval_tuned"], stats["select_windows"]) == (6, 6, 3)
    trains = [line for line in res.stdout.splitlines() if "latentwire train-latent" in line]
    for cmd in trains:
        named = "--exp pooled " in cmd or "--exp pooled-s1 " in cmd
        assert ("--init-checkpoint results/pretrain/squad/p8/s" in cmd) == named, cmd
    assert any(
        "--init-checkpoint results/pretrain/squad/p8/s1/" in c and "--exp pooled-s1 " in c for c in trains
    )
    evals = [line for line in res.stdout.splitlines() if "latentwire eval-latent" in line]
    assert evals and all("--fit-data results/data/squad/train.parquet" in c for c in evals)

    alone = {**plan_cfg, "comparators": {}}  # one experiment below: no select source, no ceilings
    lat = {**cfg["latent"], "extensions": {}}  # the extension names the select experiment
    bad = {**alone, "latent": {**lat, "experiments": {"x": {"latent": {**pooled["latent"],
           "encoder": {**enc, "d_z": 32, "pretrained": "p8"}}}}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"pretrain run 'p8' builds another encoder/projector \(d_z\)"):
        WorkflowPlan.from_config(bad)
    mixed = {
        **alone,
        "latent": {**lat, "experiments": {"a": {}, "b": {"latent": {"wire": {"formats": []}}}}},
    }
    with pytest.raises(ConfigError, match="wire.formats: must be the same"):
        WorkflowPlan.from_config(mixed)


def test_k_fold_dataset_runs_every_rule_per_fold_and_pools_the_tables():
    """``split.folds: 3`` stands for three datasets (fold i tested in the i-th); the tables label
    them all with the base name, so every question counts once in one pooled row per system."""
    from latentwire.workflow import WorkflowPlan

    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["registry"] = str(REPO / ".test" / "config" / "models.yaml")
    (name, raw), *_ = cfg["datasets"].items()
    raw.setdefault("split", {})["folds"] = 3
    plan = WorkflowPlan.from_config(cfg)
    folds = [f"{name}_f{i}" for i in range(3)]
    assert sorted(plan.datasets) == folds
    assert [plan.datasets[d].split.fold for d in folds] == [0, 1, 2]
    assert set(plan.table_datasets()) == {name} and set(plan.joint_datasets()) == {name}
    assert len(plan.table_metrics()) == len(plan.table_datasets())
    assert {m.split("/")[2] for m in plan.baseline_metrics()} == set(folds)  # baselines run per fold


def _documented_stack(overlay: Path) -> list[Path]:
    """The config files an overlay's header comment says to stack (``--configfile config/config.yaml
    … overlay``), ending with the overlay itself; ``config.yaml`` + the overlay when it names none."""
    found = re.search(r"--configfile((?:\s+config/[\w.-]+\.yaml)+)", overlay.read_text())
    names = found.group(1).split() if found else ["config/config.yaml"]
    stack = [REPO / n for n in names]
    return stack if stack[-1] == overlay else [*stack, overlay]


@pytest.mark.parametrize(
    "overlay",
    sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name not in ("config.yaml", "models.yaml")),
)
def test_every_overlay_plans_on_the_stack_its_header_documents(overlay):
    """A GPU overlay is only run on a lent machine: a key it misspells must fail here, not there."""
    from latentwire.config import merge_configs
    from latentwire.workflow import WorkflowPlan

    cfg: dict = {}
    for path in _documented_stack(REPO / "config" / overlay):
        cfg = merge_configs(cfg, yaml.safe_load(path.read_text()))
    cfg["registry"] = str(REPO / "config" / "models.yaml")
    plan = WorkflowPlan.from_config(cfg)
    assert plan.experiments or plan.baselines
