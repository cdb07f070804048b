"""Path templates: partial filling leaves Snakemake's other wildcards, and the library's helpers
give what the templates give the rules."""

from latentwire.plan import paths


def test_partial_fills_some_wildcards_and_leaves_the_rest():
    assert paths.partial(paths.SPLIT, split="train") == "results/data/{dataset}/train.parquet"
    assert paths.partial(paths.SPLIT, dataset="{{dataset}}") == "results/data/{{dataset}}/{split}.parquet"
    assert paths.partial(paths.TUNED, tuned="text", seed=2) == "results/tuned/{dataset}/{model}/text-s2"


def test_helpers_fill_the_rules_templates():
    assert paths.baseline_metrics("squad", "m", "text") == paths.inside(
        paths.BASELINE.format(dataset="squad", model="m", baseline="text"), "metrics.json"
    )
    cell = {"encoder": "select", "M": 48, "dz": 896, "head": "shallow", "preset": "e", "seed": 1}
    run = "results/latent/squad/select/M48-dz896/shallow/e/seed1"
    assert paths.latent_dir("squad", **cell) == paths.LATENT.format(dataset="squad", **cell) == run
    assert paths.latent_checkpoint("squad", **cell) == f"{run}/stage_b/best.safetensors"
    assert paths.latent_eval_dir("squad", **cell) == f"{run}/stage_c"
    assert (
        paths.inside(paths.LATENT, paths.HANDOFF).format(dataset="squad", **cell) == f"{run}/stage_a/state.pt"
    )
    assert paths.LATENT_STATE.format(dataset="squad", **cell) == run.replace("results/", "results/state/")
    assert paths.tuned_metrics("squad", "m", "select-text-48", 1) == (
        "results/tuned/squad/m/select-text-48-s1/eval/metrics.json"
    )
    assert paths.extension_dir("squad", "e+m") == paths.EXTEND.format(dataset="squad", exp="e", model="m")
    assert paths.teacher_cache("squad", "m") == "results/teacher/squad/m/train.safetensors"
    assert paths.pretrain_checkpoint("squad", "arc", 0) == "results/pretrain/squad/arc/s0/encoder.safetensors"
