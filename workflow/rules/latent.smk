# Latent interlingua, one run per (dataset, encoder, M, d_z, reading head, preset, seed)
# (latentwire/plan/stages.py; folder: latentwire.plan.paths.LATENT):
# - stage_a: Stage A (A0, the encoder's warm-up, and A, the first-token warm-up: train.stage_a_end()
#   steps); writes its whole resumable state, stage_a/state.pt. With no Stage A steps it is a short
#   job that loads the models and writes the initial state (its summary says so);
# - stage_b: the full objective to train.steps, continuing stage_a's state (one trajectory, as one job
#   would run it); stage_b/best.safetensors is the run's checkpoint;
# - stage_c: evaluation with controls (shuffled, zero Z), wire formats and joint rescoring.
# Each training stage keeps its resumable state in results/state/latent/.../stage_{a,b}/<run key>/,
# outside the declared outputs (which Snakemake deletes after a failed job): a rerun resumes from it
# and writes the outputs whole at the end; other settings, models or data get another key.


rule stage_a:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        teacher=teacher_inputs,
        pretrained=pretrain_checkpoint,
        train=paths.partial(paths.SPLIT, split="train"),
        validation=paths.partial(paths.SPLIT, split="validation"),
    output:
        state=paths.inside(paths.LATENT, paths.HANDOFF),
        checkpoint=paths.inside(paths.LATENT, paths.STAGE_A, paths.BEST),
        summary=paths.inside(paths.LATENT, paths.STAGE_A, paths.SUMMARY),
        log_jsonl=paths.inside(paths.LATENT, paths.STAGE_A, paths.LOG),
    params:
        cfg=latent_json,
        exp=run_of,
        models=PLAN.models,
        out_dir=paths.inside(paths.LATENT, paths.STAGE_A),
        state_dir=paths.inside(paths.LATENT_STATE, paths.STAGE_A),
    log:
        paths.inside(paths.LATENT_LOGS, "stage_a.log"),
    benchmark:
        paths.inside(paths.LATENT_BENCH, "stage_a.tsv")
    threads: 4
    resources:
        mem_mb=32000,
        runtime=240,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire train-latent --stage a --registry {input.registry:q} --models {params.models:q}"
        " --manifests {input.manifests:q} --encoder-manifest {input.encoder_manifest:q}"
        " --config-json {params.cfg:q} --exp {params.exp:q}"
        " --threads {threads} --train {input.train:q} --validation {input.validation:q}"
        " --teacher-logits {input.teacher:q} --init-checkpoint {input.pretrained:q}"
        " --out-dir {params.out_dir:q} --state-dir {params.state_dir:q} > {log:q} 2>&1"


rule stage_b:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        teacher=teacher_inputs,
        pretrained=pretrain_checkpoint,
        train=paths.partial(paths.SPLIT, split="train"),
        validation=paths.partial(paths.SPLIT, split="validation"),
        stage_a=paths.inside(paths.LATENT, paths.HANDOFF),
    output:
        checkpoint=paths.inside(paths.LATENT, paths.STAGE_B, paths.BEST),
        summary=paths.inside(paths.LATENT, paths.STAGE_B, paths.SUMMARY),
        log_jsonl=paths.inside(paths.LATENT, paths.STAGE_B, paths.LOG),
    params:
        cfg=latent_json,
        exp=run_of,
        models=PLAN.models,
        out_dir=paths.inside(paths.LATENT, paths.STAGE_B),
        state_dir=paths.inside(paths.LATENT_STATE, paths.STAGE_B),
    log:
        paths.inside(paths.LATENT_LOGS, "stage_b.log"),
    benchmark:
        paths.inside(paths.LATENT_BENCH, "stage_b.tsv")
    threads: 4
    resources:
        mem_mb=32000,
        runtime=480,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire train-latent --stage b --init-state {input.stage_a:q} --registry {input.registry:q}"
        " --models {params.models:q} --manifests {input.manifests:q}"
        " --encoder-manifest {input.encoder_manifest:q} --config-json {params.cfg:q} --exp {params.exp:q}"
        " --threads {threads} --train {input.train:q} --validation {input.validation:q}"
        " --teacher-logits {input.teacher:q} --init-checkpoint {input.pretrained:q}"
        " --out-dir {params.out_dir:q} --state-dir {params.state_dir:q} > {log:q} 2>&1"


rule stage_c:
    input:
        registry=config["registry"],
        manifests=PLAN.manifests(),
        encoder_manifest=encoder_manifest,
        checkpoint=paths.inside(paths.LATENT, paths.STAGE_B, paths.BEST),
        data=paths.partial(paths.SPLIT, split=PLAN.eval_split),
        train=paths.partial(paths.SPLIT, split="train"),  # k-shot examples (prompt.shots) only
        fit_data=wire_fit_data,
    output:
        metrics=expand(
            paths.eval_metrics(paths.inside(paths.partial(paths.LATENT, **STAGE_WILDCARDS), paths.STAGE_C), "{model}", "{variant}"),
            model=PLAN.models,
            variant=PLAN.latent_variants,
        ),
        joint=paths.joint_file(paths.inside(paths.LATENT, paths.STAGE_C)),
    params:
        cfg=latent_json,
        exp=run_of,
        models=PLAN.models,
        out_dir=paths.inside(paths.LATENT, paths.STAGE_C),
    log:
        paths.inside(paths.LATENT_LOGS, "stage_c.log"),
    benchmark:
        paths.inside(paths.LATENT_BENCH, "stage_c.tsv")
    threads: 4
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire eval-latent --registry {input.registry:q} --models {params.models:q}"
        " --manifests {input.manifests:q} --encoder-manifest {input.encoder_manifest:q}"
        " --config-json {params.cfg:q} --exp {params.exp:q}"
        " --threads {threads} --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --shots-from {input.train:q} --fit-data {input.fit_data:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
