# Latent interlingua: train encoder + adapters per (dataset, experiment), then evaluate with controls.


rule train_latent:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        teacher=teacher_inputs,
        pretrained=pretrain_checkpoint,
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
    output:
        checkpoint="results/latent/{dataset}/{exp}/train/best.safetensors",
        summary="results/latent/{dataset}/{exp}/train/train_summary.json",
        log_jsonl="results/latent/{dataset}/{exp}/train/train_log.jsonl",
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
        "latentwire train-latent --registry {input.registry} --models {params.models}"
        " --manifests {input.manifests} --encoder-manifest {input.encoder_manifest}"
        " --config-json {params.cfg:q} --exp {wildcards.exp}"
        " --threads {threads} --train {input.train} --validation {input.validation}"
        " --teacher-logits {input.teacher} --init-checkpoint {input.pretrained}"
        " --out-dir results/latent/{wildcards.dataset}/{wildcards.exp}/train > {log} 2>&1"


rule eval_latent:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        checkpoint="results/latent/{dataset}/{exp}/train/best.safetensors",
        data=f"results/data/{{dataset}}/{PLAN.eval_split}.parquet",
        fit_data=wire_fit_data,
    output:
        metrics=expand(
            "results/latent/{{dataset}}/{{exp}}/eval/{model}/{variant}/metrics.json",
            model=PLAN.models,
            variant=PLAN.latent_variants,
        ),
        joint="results/latent/{dataset}/{exp}/eval/joint.json",
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
        "latentwire eval-latent --registry {input.registry} --models {params.models}"
        " --manifests {input.manifests} --encoder-manifest {input.encoder_manifest}"
        " --config-json {params.cfg:q} --exp {wildcards.exp}"
        " --threads {threads} --checkpoint {input.checkpoint} --data {input.data} --fit-data {input.fit_data}"
        " --out-dir results/latent/{wildcards.dataset}/{wildcards.exp}/eval > {log} 2>&1"
