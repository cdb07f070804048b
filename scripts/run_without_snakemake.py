"""Run the workflow's jobs in order with the same CLIs and arguments as the Snakemake rules, for a
machine that has the library's runtime dependencies but no Snakemake (a lent GPU box).

The job settings come from :class:`latentwire.workflow.WorkflowPlan`, exactly as ``common.smk``
derives them, so results are the pipeline's own; only the scheduling differs (no DAG: a job runs
when its output is missing, in rule order). Usage::

    python scripts/run_without_snakemake.py --configfile config/config.yaml config/gpu-select.yaml \
        [--steps models data pretrain baselines latent stats] [--jobs N] [--dry-run]

Each job's output goes to the rule's path under results/, its log to logs/ as the rule's ``log:``.
With ``--jobs N`` the baselines and the experiments (each one's train → eval in order) run N at a
time, after the models and data and before the tables, as Snakemake would schedule them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentwire.config import merge_configs  # noqa: E402
from latentwire.workflow import WorkflowPlan  # noqa: E402

CLI = [sys.executable, "-m", "latentwire.cli.main"]


def jobs(plan: WorkflowPlan, cfg: dict, threads: int) -> list[tuple[str, list[str], list[str], str]]:
    """(step, argv, outputs, log) for every job, in rule order."""
    reg, models = cfg["registry"], plan.models
    manifests = plan.manifests()
    out: list[tuple[str, list[str], list[str], str]] = []
    for m in sorted(set(models) | set(plan.encoder_sources()) | set(plan.extension_receivers())):
        argv = [
            "model",
            "--registry",
            reg,
            "--name",
            m,
            "--cache-dir",
            f"resources/models/{m}",
            "--check-load",
        ]
        out.append(("models", argv, [f"resources/models/{m}/manifest.json"], f"logs/models/{m}.log"))
    for d in plan.datasets:
        argv = ["prepare", "--config-json", plan.dataset_json(d), "--out-dir", f"results/data/{d}"]
        outs = [f"results/data/{d}/{s}.parquet" for s in ("train", "validation", "test")]
        out.append(("data", argv, outs, f"logs/data/{d}.log"))
    for d, name, seed in plan.pretrain_cells():
        root = f"results/pretrain/{d}/{name}/s{seed}"
        argv = ["pretrain-encoder", "--registry", reg, "--models", *models, "--manifests", *manifests,
                "--encoder-manifest", *plan.pretrain_encoder_manifest(name),
                "--config-json", plan.pretrain_json(name, seed), "--threads", str(threads),
                "--train", f"results/data/{d}/train.parquet", "--held-out", f"results/data/{d}/validation.parquet",
                f"results/data/{d}/test.parquet", "--out-dir", root]  # fmt: skip
        out.append(
            ("pretrain", argv, [f"{root}/encoder.safetensors"], f"logs/pretrain/{d}/{name}/s{seed}.log")
        )
    split = plan.eval_split
    for d in plan.datasets:
        for m in models + plan.extension_receivers():
            for b in plan.receiver_baselines(m):
                base = f"results/baselines/{d}/{m}/{b}"
                argv = ["baseline", "--registry", reg, "--model", m, "--manifest", f"resources/models/{m}/manifest.json",
                        "--data", f"results/data/{d}/{split}.parquet", "--config-json", plan.baseline_json(b),
                        "--shots-from", f"results/data/{d}/train.parquet",
                        "--threads", str(threads), "--predictions", f"{base}/predictions.jsonl",
                        "--metrics", f"{base}/metrics.json"]  # fmt: skip
                out.append(("baselines", argv, [f"{base}/metrics.json"], f"logs/baselines/{d}/{m}/{b}.log"))
    for d in plan.datasets:
        for e in plan.experiments:
            common = ["--registry", reg, "--models", *models, "--manifests", *manifests,
                      "--encoder-manifest", *plan.encoder_manifest(e), "--config-json", plan.latent_json(e),
                      "--exp", e, "--threads", str(threads)]  # fmt: skip
            root = f"results/latent/{d}/{e}"
            train = ["train-latent", *common, "--train", f"results/data/{d}/train.parquet",
                     "--validation", f"results/data/{d}/validation.parquet",
                     "--teacher-logits", *plan.teacher_inputs(d, e),
                     "--init-checkpoint", *plan.pretrain_checkpoint(d, e), "--out-dir", f"{root}/train",
                     "--state-dir", f"results/state/latent/{d}/{e}"]  # fmt: skip
            out.append(
                ("latent", train, [f"{root}/train/best.safetensors"], f"logs/latent/{d}/{e}/train.log")
            )
            ev = ["eval-latent", *common, "--checkpoint", f"{root}/train/best.safetensors",
                  "--data", f"results/data/{d}/{split}.parquet", "--shots-from", f"results/data/{d}/train.parquet",
                  "--fit-data", *plan.wire_fit_data(d, e),
                  "--out-dir", f"{root}/eval"]  # fmt: skip
            out.append(("latent", ev, [f"{root}/eval/joint.json"], f"logs/latent/{d}/{e}/eval.log"))
            # receivers added to this wire: logged beside it, so they run in its chain, after its eval
            for x in [x for x in plan.extensions if plan.extensions[x].exp == e]:
                r, xdir = plan.extensions[x].args.receiver, plan.extension_dir(d, x)
                add = [*common, "--receiver-manifest", f"resources/models/{r}/manifest.json",
                       "--extend-json", plan.extend_json(x), "--checkpoint", f"{root}/train/best.safetensors"]  # fmt: skip
                xtrain = ["add-receiver", *add, "--train", f"results/data/{d}/train.parquet",
                          "--validation", f"results/data/{d}/validation.parquet", "--out-dir", f"{xdir}/train"]  # fmt: skip
                xev = ["eval-added-receiver", *add, "--extension-dir", f"{xdir}/train", "--data",
                       f"results/data/{d}/{split}.parquet", "--shots-from", f"results/data/{d}/train.parquet",
                       "--reference-eval", f"{root}/eval", "--out-dir", f"{xdir}/eval"]  # fmt: skip
                log = f"logs/latent/{d}/{e}/extend-{r}"
                out.append(("latent", xtrain, [f"{xdir}/train/best.safetensors"], f"{log}.train.log"))
                out.append(("latent", xev, [f"{xdir}/eval/joint.json"], f"{log}.eval.log"))
    stats = ["stats", "--metrics", *plan.table_metrics(), "--datasets", *plan.table_datasets(),
             "--joint", *plan.joint_files(), "--joint-datasets", *plan.joint_datasets(),
             "--config-json", plan.stats_json(), "--intervals-csv", "results/tables/intervals.csv",
             "--intervals-md", "results/tables/intervals.md", "--hypotheses-csv", "results/tables/hypotheses.csv",
             "--hypotheses-md", "results/tables/hypotheses.md", "--provenance", "results/tables/stats.json"]  # fmt: skip
    out.append(("stats", stats, ["results/tables/stats.json"], "logs/tables/stats.log"))
    table = ["table", "--metrics", *plan.table_metrics(), "--datasets", *plan.table_datasets(),
             "--csv", "results/tables/results.csv", "--markdown", "results/tables/results.md", "--title", "Results"]  # fmt: skip
    out.append(("stats", table, ["results/tables/results.md"], "logs/tables/results.log"))
    return out


Job = tuple[str, list[str], list[str], str]


def say(line: str) -> None:
    """One whole line to stdout (parallel jobs must not interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_job(job: Job, dry_run: bool) -> int:
    """Run one job unless its outputs exist; its output goes to its log. Returns the exit code."""
    step, argv, outs, log = job
    if all(Path(o).exists() for o in outs):
        return 0
    say(f"[{time.strftime('%H:%M:%S')}] {step}: {shlex.join(argv[:1] + argv[1:6])} … > {log}")
    if dry_run:
        return 0
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        rc = subprocess.call(CLI + argv, stdout=fh, stderr=subprocess.STDOUT)
    say(f"[{time.strftime('%H:%M:%S')}] rc={rc} in {time.time() - t0:.0f} s: {log}")
    if rc:
        say(Path(log).read_text()[-3000:])
    return rc


def run_chain(chain: list[Job], dry_run: bool) -> int:
    """Jobs that depend on each other (an experiment's train, then its eval), in order."""
    for job in chain:
        rc = run_job(job, dry_run)
        if rc:
            return rc
    return 0


def chains(jobs_: list[Job]) -> list[list[Job]]:
    """Independent units: each baseline alone; each experiment's train + eval together."""
    out: dict[str, list[Job]] = {}
    for job in jobs_:
        log = job[3]
        key = str(Path(log).parent) if job[0] == "latent" else log
        out.setdefault(key, []).append(job)
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument(
        "--steps", nargs="+", default=["models", "data", "pretrain", "baselines", "latent", "stats"]
    )
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=1, help="baselines / experiments run at a time")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    cfg: dict = {}
    for f in a.configfile:
        cfg = merge_configs(cfg, yaml.safe_load(Path(f).read_text()) or {})
    plan = WorkflowPlan.from_config(cfg)
    todo = [j for j in jobs(plan, cfg, a.threads) if j[0] in a.steps]
    before = [j for j in todo if j[0] in ("models", "data", "pretrain")]  # pretraining: shared by experiments
    middle = [j for j in todo if j[0] in ("baselines", "latent")]
    after = [j for j in todo if j[0] == "stats"]
    failed = run_chain(before, a.dry_run)
    if not failed:
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            codes = list(pool.map(lambda c: run_chain(c, a.dry_run), chains(middle)))
        failed = next((rc for rc in codes if rc), 0)
    failed = failed or run_chain(after, a.dry_run)
    if failed:
        sys.exit(failed)
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
