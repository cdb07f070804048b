# Data preparation: source files -> one parquet per split (split by article, no overlap).


rule prepare_data:
    input:
        sources=dataset_inputs,
    output:
        splits=expand(paths.partial(paths.SPLIT, dataset="{{dataset}}"), split=PLAN.splits),
    log:
        "logs/data/{dataset}.log",
    conda:
        "../envs/latentwire.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        cfg=dataset_json,
    shell:
        "latentwire prepare --config-json {params.cfg:q} --out-dir results/data/{wildcards.dataset:q} > {log:q} 2>&1"
