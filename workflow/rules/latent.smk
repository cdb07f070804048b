# Latent interlingua: train encoder + adapters per (dataset, experiment), then evaluate with controls.
# train_latent keeps its resumable state in results/state/latent/{dataset}/{exp}/<run key>/, outside
# the declared outputs (which Snakemake deletes after a failed job): a rerun resumes from it and writes
# the outputs whole at the end; other settings, models or data get another key and start afresh.


rule train_latent:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        teacher=teacher_inputs,
        pretrained=pretrain_checkpoint,
        train=paths.partial(paths.SPLIT, split="train"),
        validation=paths.partial(paths.SPLIT, split="validation"),
    output:
        checkpoint=paths.inside(paths.LATENT, paths.CHECKPOINT),
        summary=paths.inside(paths.LATENT, paths.TRAIN_SUMMARY),
        log_jsonl=paths.inside(paths.LATENT, paths.TRAIN_LOG),
    params:
        cfg=latent_json,
        models=PLAN.models,
    log:
        "logs/latent/{dataset}/{exp}/train.log",
    benchmark:
        "benchmarks/latent/{dataset}/{exp}/train.tsv"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=480,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire train-latent --registry {input.registry:q} --models {params.models:q}"
        " --manifests {input.manifests:q} --encoder-manifest {input.encoder_manifest:q}"
        " --config-json {params.cfg:q} --exp {wildcards.exp:q}"
        " --threads {threads} --train {input.train:q} --validation {input.validation:q}"
        " --teacher-logits {input.teacher:q} --init-checkpoint {input.pretrained:q}"
        " --out-dir results/latent/{wildcards.dataset:q}/{wildcards.exp:q}/train"
        " --state-dir results/state/latent/{wildcards.dataset:q}/{wildcards.exp:q} > {log:q} 2>&1"


rule eval_latent:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        checkpoint=paths.inside(paths.LATENT, paths.CHECKPOINT),
        data=paths.partial(paths.SPLIT, split=PLAN.eval_split),
        train=paths.partial(paths.SPLIT, split="train"),  # k-shot examples (prompt.shots) only
        fit_data=wire_fit_data,
    output:
        metrics=expand(
            paths.inside(paths.partial(paths.LATENT, dataset="{{dataset}}", exp="{{exp}}"), "eval/{model}/{variant}/metrics.json"),
            model=PLAN.models,
            variant=PLAN.latent_variants,
        ),
        joint=paths.inside(paths.LATENT, "eval/joint.json"),
    params:
        cfg=latent_json,
        models=PLAN.models,
    log:
        "logs/latent/{dataset}/{exp}/eval.log",
    benchmark:
        "benchmarks/latent/{dataset}/{exp}/eval.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire eval-latent --registry {input.registry:q} --models {params.models:q}"
        " --manifests {input.manifests:q} --encoder-manifest {input.encoder_manifest:q}"
        " --config-json {params.cfg:q} --exp {wildcards.exp:q}"
        " --threads {threads} --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --shots-from {input.train:q} --fit-data {input.fit_data:q}"
        " --out-dir results/latent/{wildcards.dataset:q}/{wildcards.exp:q}/eval > {log:q} 2>&1"
