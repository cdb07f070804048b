# Discrete comparators that need a trained latent, and matched-supervision text ceilings:
# - select_windows: the tokens the select experiment's checkpoint keeps, per example of one split
#   (read by the select-text-M baselines and their tuned ceilings);
# - tune_text / eval_tuned: LoRA on each receiver reading text or select-text-M, trained on the Stage B
#   schedule and answer losses of comparators.tuned.like, one job per seed (k-shot prompts take their
#   shots from the train split: tune-text's --train, eval-tuned's --shots-from). Like stage_a/stage_b,
#   tune_text keeps its resumable state in results/state/tuned/{dataset}/{model}/{tuned}-s{seed}/<run key>/,
#   outside its declared outputs: a rerun after a kill resumes from the last validation.
# select_windows reads only the run's content text (what the encoder reads), never a model's prompt.


rule select_windows:
    input:
        unpack(select_windows_inputs),
        registry=config["registry"],
        data=paths.SPLIT,
    output:
        windows=paths.WINDOWS,
    params:
        cfg=latent_json,
        n_models=len(PLAN.models),
        ev=windows_eval_json,
    log:
        "logs/comparators/{dataset}/{exp}/windows-{split}.log",
    threads: 4
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire select-windows --registry {input.registry:q} --manifest {input.manifest:q}"
        " --config-json {params.cfg:q} --n-models {params.n_models:q} --checkpoint {input.checkpoint:q}"
        " --data {input.data:q} --eval-json {params.ev:q} --threads {threads} --out {output.windows:q}"
        " > {log:q} 2>&1"


rule tune_text:
    input:
        registry=config["registry"],
        manifest=paths.MANIFEST,
        train=paths.partial(paths.SPLIT, split="train"),
        validation=paths.partial(paths.SPLIT, split="validation"),
        windows=tuned_train_windows,
    output:
        checkpoint=paths.inside(paths.TUNED, paths.CHECKPOINT),
        summary=paths.inside(paths.TUNED, paths.TRAIN_SUMMARY),
        log_jsonl=paths.inside(paths.TUNED, paths.TRAIN_LOG),
    params:
        cfg=tuned_json,
        out_dir=tuned_train_dir,
        state_dir=tuned_state_dir,
    log:
        "logs/tuned/{dataset}/{model}/{tuned}-s{seed}/train.log",
    benchmark:
        "benchmarks/tuned/{dataset}/{model}/{tuned}-s{seed}/train.tsv"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=240,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire tune-text --registry {input.registry:q} --model {wildcards.model:q}"
        " --manifest {input.manifest:q} --config-json {params.cfg:q} --windows {input.windows:q}"
        " --threads {threads} --train {input.train:q} --validation {input.validation:q}"
        " --out-dir {params.out_dir:q} --state-dir {params.state_dir:q} > {log:q} 2>&1"


rule eval_tuned:
    input:
        registry=config["registry"],
        manifest=paths.MANIFEST,
        checkpoint=paths.inside(paths.TUNED, paths.CHECKPOINT),
        data=paths.partial(paths.SPLIT, split=PLAN.eval_split),
        train=paths.partial(paths.SPLIT, split="train"),  # k-shot examples (prompt.shots) only
        windows=tuned_eval_windows,
    output:
        predictions=paths.inside(paths.TUNED, "eval/predictions.jsonl"),
        metrics=paths.inside(paths.TUNED, "eval/metrics.json"),
    params:
        cfg=tuned_json,
    log:
        "logs/tuned/{dataset}/{model}/{tuned}-s{seed}/eval.log",
    benchmark:
        "benchmarks/tuned/{dataset}/{model}/{tuned}-s{seed}/eval.tsv"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../envs/latentwire.yaml"
    shell:
        "latentwire eval-tuned --registry {input.registry:q} --model {wildcards.model:q}"
        " --manifest {input.manifest:q} --config-json {params.cfg:q} --windows {input.windows:q}"
        " --threads {threads} --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --shots-from {input.train:q} --predictions {output.predictions:q} --metrics {output.metrics:q} > {log:q} 2>&1"
