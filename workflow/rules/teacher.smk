# Text-teacher logits for knowledge distillation: computed once per (dataset, model) on the training
# split and cached as top-k (latentwire.training.teacher); only experiments with loss.w_kd > 0 read them.


rule teacher_logits:
    input:
        registry=config["registry"],
        manifest=paths.MANIFEST,
        data=paths.partial(paths.SPLIT, split="train"),
    output:
        logits=paths.TEACHER,
        meta=paths.TEACHER_META,
    log:
        "logs/teacher/{dataset}/{model}.log",
    benchmark:
        "benchmarks/teacher/{dataset}/{model}.tsv"
    conda:
        "../envs/latentwire.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        cfg=teacher_json,
    shell:
        "latentwire teacher-logits --registry {input.registry:q} --model {wildcards.model:q}"
        " --manifest {input.manifest:q} --data {input.data:q} --config-json {params.cfg:q}"
        " --threads {threads} --out {output.logits:q} --meta {output.meta:q} > {log:q} 2>&1"
