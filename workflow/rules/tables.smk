# Results tables gathered from metrics files only.


rule results_table:
    input:
        metrics=table_metrics,
    output:
        csv=report(
            "results/tables/results.csv",
            caption="../report/results.rst",
            category="Tables",
            labels={"table": "results (CSV)"},
        ),
        md=report(
            "results/tables/results.md",
            caption="../report/results.rst",
            category="Tables",
            labels={"table": "results (Markdown)"},
        ),
    log:
        "logs/tables/results.log",
    conda:
        "../envs/latentwire.yaml"
    params:
        datasets=table_datasets,
    shell:
        "latentwire table --metrics {input.metrics:q} --datasets {params.datasets:q}"
        " --csv {output.csv:q} --markdown {output.md:q} --title Results > {log:q} 2>&1"
