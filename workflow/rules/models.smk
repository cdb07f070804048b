# Frozen LLMs: assemble/verify/export each registry model once, and tiny models for the test run.


rule materialize_model:
    input:
        registry=config["registry"],
        source=model_source_inputs,
    output:
        manifest="resources/models/{model}/manifest.json",
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
        "latentwire model --registry {input.registry} --name {wildcards.model}"
        " --cache-dir resources/models/{wildcards.model} --check-load > {log} 2>&1"


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
        "latentwire tiny-model --family {wildcards.family} --out resources/tiny/{wildcards.family} > {log} 2>&1"
