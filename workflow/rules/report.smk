# Statistics and figures for the report, from results files only (metrics, predictions beside them,
# joint.json, train logs; never checkpoints). Rule names contain "table" like every aggregate rule
# (results_table), which is how the SLURM CI recognises the aggregate jobs of a partial rerun.


rule stats_tables:
    input:
        metrics=table_metrics,
        joint=PLAN.joint_files(),
    output:
        intervals_csv=report(
            "results/tables/intervals.csv",
            caption="../report/intervals.rst",
            category="Tables",
            labels={"table": "intervals (CSV)"},
        ),
        intervals_md=report(
            "results/tables/intervals.md",
            caption="../report/intervals.rst",
            category="Tables",
            labels={"table": "intervals (Markdown)"},
        ),
        hypotheses_csv=report(
            "results/tables/hypotheses.csv",
            caption="../report/hypotheses.rst",
            category="Tables",
            labels={"table": "hypotheses (CSV)"},
        ),
        hypotheses_md=report(
            "results/tables/hypotheses.md",
            caption="../report/hypotheses.rst",
            category="Tables",
            labels={"table": "hypotheses (Markdown)"},
        ),
        provenance="results/tables/stats.json",
    log:
        "logs/tables/stats.log",
    conda:
        "../envs/latentwire.yaml"
    params:
        datasets=table_datasets,
        joint_datasets=PLAN.joint_datasets(),
        cfg=PLAN.stats_json(),
    shell:
        "latentwire stats --metrics {input.metrics:q} --datasets {params.datasets:q}"
        " --joint {input.joint:q} --joint-datasets {params.joint_datasets:q} --config-json {params.cfg:q}"
        " --intervals-csv {output.intervals_csv:q} --intervals-md {output.intervals_md:q}"
        " --hypotheses-csv {output.hypotheses_csv:q} --hypotheses-md {output.hypotheses_md:q}"
        " --provenance {output.provenance:q} > {log:q} 2>&1"


rule table_figures:
    input:
        intervals="results/tables/intervals.csv",
        metrics=table_metrics,
        train_logs=PLAN.train_logs(),
    output:
        f1_png=report(
            "results/figures/f1_vs_m.png",
            caption="../report/f1_vs_m.rst",
            category="Figures",
            labels={"figure": "F1 vs M"},
        ),
        f1_svg="results/figures/f1_vs_m.svg",
        latency_png=report(
            "results/figures/latency.png",
            caption="../report/latency.rst",
            category="Figures",
            labels={"figure": "latency"},
        ),
        latency_svg="results/figures/latency.svg",
        payload_png=report(
            "results/figures/payload.png",
            caption="../report/payload.rst",
            category="Figures",
            labels={"figure": "payload bytes"},
        ),
        payload_svg="results/figures/payload.svg",
        training_png=report(
            "results/figures/training.png",
            caption="../report/training.rst",
            category="Figures",
            labels={"figure": "training curves"},
        ),
        training_svg="results/figures/training.svg",
        provenance="results/figures/figures.json",
    log:
        "logs/tables/figures.log",
    conda:
        "../envs/latentwire.yaml"
    params:
        datasets=table_datasets,
        train_labels=PLAN.train_labels(),
    shell:
        "latentwire figures --metrics {input.metrics:q} --datasets {params.datasets:q}"
        " --intervals {input.intervals:q} --train-logs {input.train_logs:q} --train-labels {params.train_labels:q}"
        " --f1-vs-m {output.f1_png:q} {output.f1_svg:q} --latency {output.latency_png:q} {output.latency_svg:q}"
        " --payload {output.payload_png:q} {output.payload_svg:q}"
        " --training {output.training_png:q} {output.training_svg:q}"
        " --provenance {output.provenance:q} > {log:q} 2>&1"


rule sweep_tables:
    input:
        metrics=table_metrics,
        intervals="results/tables/intervals.csv",
        pretrain_summaries=pretrain_summaries,
    output:
        **{
            name.removesuffix(".csv"): report(
                f"{paths.SWEEPS}/{name}",
                caption="../report/sweeps.rst",
                category="Tables",
                labels={"table": f"encoder sweep: {name}"},
            )
            for name in paths.SWEEP_TABLES
        },
        provenance=f"{paths.SWEEPS}/sweeps.json",
    log:
        "logs/tables/sweeps.log",
    conda:
        "../envs/latentwire.yaml"
    params:
        datasets=table_datasets,
        out_dir=lambda w, output: os.path.dirname(output.provenance),
    shell:
        "latentwire sweeps --metrics {input.metrics:q} --datasets {params.datasets:q}"
        " --intervals {input.intervals:q} --pretrain-summaries {input.pretrain_summaries:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
