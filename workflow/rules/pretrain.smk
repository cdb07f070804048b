# Encoder pretraining (continuation + reconstruction through the frozen receivers, train-split
# contexts only) per (dataset, pretrain run, seed); stage_a and stage_b of an experiment whose
# encoder names the run (latent.encoder.pretrained) start from its checkpoint, at its train.seed.


rule pretrain_encoder:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=pretrain_encoder_manifest,
        train=paths.partial(paths.SPLIT, split="train"),
        held_out=[
            paths.partial(paths.SPLIT, split="validation"),
            paths.partial(paths.SPLIT, split="test"),
        ],
    output:
        checkpoint=paths.inside(paths.PRETRAIN, "encoder.safetensors"),
        summary=paths.inside(paths.PRETRAIN, "pretrain_summary.json"),
        log_jsonl=paths.inside(paths.PRETRAIN, "pretrain_log.jsonl"),
    log:
        "logs/pretrain/{dataset}/{pretrain}/s{seed}.log",
    benchmark:
        "benchmarks/pretrain/{dataset}/{pretrain}/s{seed}.tsv"
    wildcard_constraints:
        pretrain="|".join(map(re.escape, PLAN.pretrains)) or "no-pretrain",
        seed="[0-9]+",
    conda:
        "../envs/latentwire.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=480,
    params:
        cfg=pretrain_json,
        models=PLAN.models,
    shell:
        "latentwire pretrain-encoder --registry {input.registry} --models {params.models}"
        " --manifests {input.manifests} --encoder-manifest {input.encoder_manifest}"
        " --config-json {params.cfg:q} --threads {threads}"
        " --train {input.train} --held-out {input.held_out}"
        " --out-dir results/pretrain/{wildcards.dataset}/{wildcards.pretrain}/s{wildcards.seed} > {log} 2>&1"
