# A new receiver on a trained wire (latent.extensions), in results/extend/{dataset}/{exp}+{model}:
# train only its reading head on the experiment's frozen, hash-checked checkpoint, then evaluate it
# with controls and joint rescoring over every receiver; the old receivers' predictions are
# checked against the experiment's own evaluation (its stage_c/, wire_check.json).


rule add_receiver:
    input:
        unpack(extension_inputs),
        registry=config["registry"],
        manifests=PLAN.manifests(),
        receiver_manifest=paths.MANIFEST,
        train=paths.partial(paths.SPLIT, split="train"),
        validation=paths.partial(paths.SPLIT, split="validation"),
    output:
        checkpoint=paths.inside(paths.EXTEND, paths.CHECKPOINT),
        summary=paths.inside(paths.EXTEND, paths.TRAIN_SUMMARY),
        log_jsonl=paths.inside(paths.EXTEND, paths.TRAIN_LOG),
        record=paths.inside(paths.EXTEND, "train/extension.json"),
    params:
        cfg=latent_json,
        ext=extend_json,
        models=PLAN.models,
    wildcard_constraints:
        model=EXTENSION_RECEIVERS,
    log:
        "logs/extend/{dataset}/{exp}+{model}/train.log",
    benchmark:
        "benchmarks/extend/{dataset}/{exp}+{model}/train.tsv"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=480,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire add-receiver --registry {input.registry} --models {params.models}"
        " --manifests {input.manifests} --receiver-manifest {input.receiver_manifest}"
        " --encoder-manifest {input.encoder_manifest} --config-json {params.cfg:q}"
        " --extend-json {params.ext:q} --exp {wildcards.exp} --checkpoint {input.checkpoint}"
        " --threads {threads} --train {input.train} --validation {input.validation}"
        " --out-dir results/extend/{wildcards.dataset}/{wildcards.exp}+{wildcards.model}/train > {log} 2>&1"


rule eval_added_receiver:
    input:
        unpack(extension_inputs),
        registry=config["registry"],
        manifests=PLAN.manifests(),
        receiver_manifest=paths.MANIFEST,
        extension=paths.inside(paths.EXTEND, paths.CHECKPOINT),
        reference=extension_reference,
        data=paths.partial(paths.SPLIT, split=PLAN.eval_split),
        train=paths.partial(paths.SPLIT, split="train"),  # k-shot examples (prompt.shots) only
    output:
        metrics=expand(
            paths.inside(paths.partial(paths.EXTEND, dataset="{{dataset}}", exp="{{exp}}", model="{{model}}"), "eval/{{model}}/{variant}/metrics.json"),
            variant=PLAN.latent_variants,
        ),
        joint=paths.inside(paths.EXTEND, "eval/joint.json"),
        check=paths.inside(paths.EXTEND, "eval/wire_check.json"),
    params:
        cfg=latent_json,
        ext=extend_json,
        models=PLAN.models,
        reference=reference_eval_dir,
    wildcard_constraints:
        model=EXTENSION_RECEIVERS,
    log:
        "logs/extend/{dataset}/{exp}+{model}/eval.log",
    benchmark:
        "benchmarks/extend/{dataset}/{exp}+{model}/eval.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire eval-added-receiver --registry {input.registry} --models {params.models}"
        " --manifests {input.manifests} --receiver-manifest {input.receiver_manifest}"
        " --encoder-manifest {input.encoder_manifest} --config-json {params.cfg:q}"
        " --extend-json {params.ext:q} --exp {wildcards.exp} --checkpoint {input.checkpoint}"
        " --threads {threads} --data {input.data} --shots-from {input.train}"
        " --extension-dir results/extend/{wildcards.dataset}/{wildcards.exp}+{wildcards.model}/train"
        " --reference-eval {params.reference:q}"
        " --out-dir results/extend/{wildcards.dataset}/{wildcards.exp}+{wildcards.model}/eval > {log} 2>&1"
