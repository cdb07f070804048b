# Text-side baselines for each (dataset, model, baseline): text, closed, budget-M, and the discrete
# comparators at every latent M: tail-M, lexical-M, selfinfo-M, oracle-M (upper bound), select-text-M.


rule baseline:
    input:
        registry=config["registry"],
        manifest=paths.MANIFEST,
        data=paths.partial(paths.SPLIT, split=PLAN.eval_split),
        windows=baseline_windows,
        train=paths.partial(paths.SPLIT, split="train"),  # k-shot examples (prompt.shots) only
    output:
        predictions=paths.inside(paths.BASELINE, "predictions.jsonl"),
        metrics=paths.inside(paths.BASELINE, "metrics.json"),
    log:
        "logs/baselines/{dataset}/{model}/{baseline}.log",
    benchmark:
        "benchmarks/baselines/{dataset}/{model}/{baseline}.tsv"
    conda:
        "../envs/latentwire.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        cfg=baseline_json,
    shell:
        "latentwire baseline --registry {input.registry:q} --model {wildcards.model:q}"
        " --manifest {input.manifest:q} --data {input.data:q} --shots-from {input.train:q}"
        " --config-json {params.cfg:q} --windows {input.windows:q} --threads {threads}"
        " --predictions {output.predictions:q} --metrics {output.metrics:q} > {log:q} 2>&1"
