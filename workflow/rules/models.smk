# Frozen LLMs: assemble/verify/export each registry model once, and tiny models for the test run.


rule materialize_model:
    input:
        registry=config["registry"],
        source=model_source_inputs,
    output:
        manifest=paths.MANIFEST,
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/models/{model}.tsv"
    conda:
        "../envs/latentwire.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "latentwire model --registry {input.registry:q} --name {wildcards.model:q}"
        " --cache-dir resources/models/{wildcards.model:q} --check-load > {log:q} 2>&1"


rule tiny_model:
    output:
        config="resources/tiny/{family}/config.json",
    log:
        "logs/tiny/{family}.log",
    wildcard_constraints:
        family="llama|qwen2|gemma",
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire tiny-model --family {wildcards.family:q} --out resources/tiny/{wildcards.family:q} > {log:q} 2>&1"
