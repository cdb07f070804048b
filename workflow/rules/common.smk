# Config validation, wildcard constraints and small path/param helpers (logic lives in latentwire).
import re

from snakemake.utils import validate

from latentwire.plan import paths
from latentwire.plan.stages import CELL_WILDCARDS
from latentwire.workflow import WorkflowPlan

validate(config, schema="../schemas/config.schema.yaml")
# Strict parse-time check of every run config, so `snakemake -n` catches typos before any job.
PLAN = WorkflowPlan.from_config(config)


wildcard_constraints:
    model="|".join(map(re.escape, PLAN.models + PLAN.encoder_sources() + PLAN.extension_receivers())),
    dataset="|".join(map(re.escape, PLAN.datasets)),
    baseline="text|closed|(budget|tail|lexical|selfinfo|oracle|select-text)-[0-9]+",
    tuned="text|select-text-[0-9]+",
    seed="[0-9]+",
    split="|".join(PLAN.splits),
    exp="|".join(map(re.escape, PLAN.experiments)) or "no-experiments",
    # a latent run's stage wildcards (latentwire.plan.stages): the values its settings give
    encoder="|".join(map(re.escape, PLAN.cell_values("encoder"))) or "no-experiments",
    M="[0-9]+",
    dz="[0-9]+",
    head="|".join(map(re.escape, PLAN.cell_values("head"))) or "no-experiments",
    preset="|".join(map(re.escape, PLAN.cell_values("preset"))) or "no-experiments",

# a latent run's wildcards kept as wildcards through expand() (stage_c's per-receiver outputs)
STAGE_WILDCARDS = {k: "{{%s}}" % k for k in ("dataset", *CELL_WILDCARDS)}

# receivers added to a trained wire (latent.extensions): the {model} of the extend.smk rules
EXTENSION_RECEIVERS = "|".join(map(re.escape, {x.args.receiver for x in PLAN.extensions.values()})) or "none"


def final_outputs():
    return PLAN.final_outputs()


def dataset_json(wildcards):
    return PLAN.dataset_json(wildcards.dataset)


def dataset_inputs(wildcards):
    return PLAN.dataset_inputs(wildcards.dataset)


def baseline_json(wildcards):
    return PLAN.baseline_json(wildcards.baseline)


def model_source_inputs(wildcards):
    return PLAN.model_source_inputs(wildcards.model)


def baseline_windows(wildcards):
    return PLAN.baseline_windows(wildcards.dataset, wildcards.baseline)


def select_windows_inputs(wildcards):
    return PLAN.select_windows_inputs(wildcards.dataset)


def windows_eval_json(wildcards):
    return PLAN.windows_json(wildcards.split)


def tuned_train_dir(wildcards):
    return f"results/tuned/{wildcards.dataset}/{wildcards.model}/{wildcards.tuned}-s{wildcards.seed}/train"


def tuned_state_dir(wildcards):
    return f"results/state/tuned/{wildcards.dataset}/{wildcards.model}/{wildcards.tuned}-s{wildcards.seed}"


def tuned_json(wildcards):
    return PLAN.tuned_json(wildcards.tuned, wildcards.seed)


def tuned_train_windows(wildcards):
    return PLAN.tuned_windows(wildcards.dataset, wildcards.tuned, ("train", "validation"))


def tuned_eval_windows(wildcards):
    return PLAN.tuned_windows(wildcards.dataset, wildcards.tuned, (PLAN.eval_split,))


def run_of(wildcards):
    """The latent run (experiment name) of a job: its {exp}, or its stage wildcards' run."""
    if "exp" in wildcards.keys():
        return wildcards.exp
    return PLAN.run_at(dict(wildcards.items()))


def latent_json(wildcards):
    return PLAN.latent_json(run_of(wildcards))


def encoder_manifest(wildcards):
    return PLAN.encoder_manifest(run_of(wildcards))


def pretrain_json(wildcards):
    return PLAN.pretrain_json(wildcards.pretrain, wildcards.seed)


def pretrain_encoder_manifest(wildcards):
    return PLAN.pretrain_encoder_manifest(wildcards.pretrain)


def pretrain_checkpoint(wildcards):
    return PLAN.pretrain_checkpoint(wildcards.dataset, run_of(wildcards))


def wire_fit_data(wildcards):
    return PLAN.wire_fit_data(wildcards.dataset, run_of(wildcards))


def teacher_json(wildcards):
    return PLAN.teacher_json()


def teacher_inputs(wildcards):
    return PLAN.teacher_inputs(wildcards.dataset, run_of(wildcards))


def table_metrics(wildcards):
    return PLAN.table_metrics()


def table_datasets(wildcards):
    return PLAN.table_datasets()


def extension_inputs(wildcards):
    return PLAN.extension_inputs(wildcards.dataset, wildcards.exp)


def extension_reference(wildcards):
    return PLAN.extension_reference(wildcards.dataset, wildcards.exp)


def reference_eval_dir(wildcards):
    return PLAN.eval_dir(wildcards.dataset, wildcards.exp)


def extend_json(wildcards):
    return PLAN.extend_json(PLAN.extension_named(wildcards.exp, wildcards.model))


def pretrain_summaries(wildcards):
    """The pretrain_summary.json of every pretraining some experiment starts from (sweep_tables)."""
    template = paths.inside(paths.PRETRAIN, "pretrain_summary.json")
    return [template.format(dataset=d, pretrain=n, seed=s) for d, n, s in PLAN.pretrain_cells()]
