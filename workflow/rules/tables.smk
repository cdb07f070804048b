# Results tables gathered from metrics files only.


rule baseline_table:
    input:
        metrics=baseline_metrics,
    output:
        csv=report(
            "results/tables/baselines.csv",
            caption="../report/baselines.rst",
            category="Tables",
            labels={"table": "baselines (CSV)"},
        ),
        md=report(
            "results/tables/baselines.md",
            caption="../report/baselines.rst",
            category="Tables",
            labels={"table": "baselines (Markdown)"},
        ),
    log:
        "logs/tables/baselines.log",
    conda:
        "../envs/latentwire.yaml"
    params:
        datasets=baseline_datasets,
    shell:
        "latentwire table --metrics {input.metrics} --datasets {params.datasets}"
        " --csv {output.csv} --markdown {output.md} --title Baselines > {log} 2>&1"
