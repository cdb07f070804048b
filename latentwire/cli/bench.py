"""``latentwire bench``: throughput of the bare receivers, the real training step and eval latency.

Settings are :class:`latentwire.bench.BenchArgs`, merged as defaults ← ``--config`` (YAML) ←
``--config-json`` (nested keys merge) and validated strictly. The result, with its provenance,
goes to ``--out`` as JSON (written atomically); a summary goes to stdout. docs/benchmarks.md says
what each number means and gives the command for a GPU run.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from latentwire.bench import BenchArgs, run_bench
from latentwire.config import ConfigError, from_dict, load_yaml, merge_configs, to_dict
from latentwire.io import write_json
from latentwire.provenance import provenance

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput: bare frozen receivers vs the real step; eval latency")
    p.add_argument("--config", help="YAML file of BenchArgs keys")
    p.add_argument("--config-json", default="{}", help="BenchArgs keys as JSON (override --config)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--out", required=True, help="result JSON")
    p.set_defaults(func=run)


def load_bench_args(config: str | None, config_json: str) -> BenchArgs:
    """BenchArgs from an optional YAML file overridden by a JSON string."""
    base = (load_yaml(config) or {}) if config else {}
    try:
        override = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json: not valid JSON ({e})") from e
    return from_dict(BenchArgs, merge_configs(base, override), where="bench")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_bench_args(args.config, args.config_json)
    log.info("bench: %s shapes, models %s, phases %s", cfg.shapes, cfg.models, cfg.phases)
    result = run_bench(cfg)
    result["provenance"] = provenance({"bench": to_dict(cfg)})
    write_json(args.out, result)
    print(format_report(result))
    log.info("wrote %s (%.0f s in all, %.0f s building)", args.out, result["total_s"], result["build_s"])
    return 0


def format_report(result: dict) -> str:
    """The human-readable summary ``latentwire bench`` prints."""
    d, s = result["device"], result["settings"]
    lines = [
        f"device {d['name']} ({d['type']}), dtype {result['dtype']}, shapes {s['shapes']}, "
        f"B={s['batch_size']} M={s['slots']} A={s['answer_tokens']} text={s['text_tokens']} tokens, "
        f"attn {s['attn']}, compile {result.get('compiled', s['compile'])}, nf4 {s['nf4']}, {s['warmup']} warm-up + {s['iters']} timed",
    ]
    for phase in ("ceiling", "ceiling_full_prompt", "step"):
        for name, v in result.get(phase, {}).items():
            if isinstance(v, dict) and "median_ms" in v:
                peak = f", peak {v['peak_memory_gb']} GB" if v.get("peak_memory_gb") is not None else ""
                lines.append(
                    f"{phase:19s} {name:14s} {v['median_ms']:10.1f} ms (p90 {v['p90_ms']:.1f})"
                    f" {v['samples_per_min']:10.0f} samples/min{peak}"
                )
    if "pretrain" in result:
        pt, w = result["pretrain"], result["pretrain"]["work"]
        v = pt["all"]
        lines.append(
            f"{'pretrain':19s} {'all':14s} {v['median_ms']:10.1f} ms (p90 {v['p90_ms']:.1f})"
            f" {v['samples_per_min']:10.0f} samples/min, {w['encoder_tokens']} encoder tokens,"
            f" {w['flops'] / 1e12:.2f} TFLOP = {pt['achieved_tflops']:.1f} TFLOPS"
        )
    for name, ev in result.get("eval", {}).items():
        for kind in ("text", "latent"):
            e = ev[kind]
            lines.append(
                f"eval     {name:14s} {kind:6s} {e['prompt_tokens']:4d} tok ({e['prefill_columns']} computed):"
                f" prepare {e['prepare']['median_ms']:.1f}"
                f" ms, prefill {e['prefill']['median_ms']:.1f} ms, decode {e['decode_per_token']['median_ms']:.2f}"
                " ms/token"
            )
    for b, per_model in result.get("eval_by_batch", {}).items():
        for name, ev in per_model.items():
            t, z = (ev[k]["prepare_plus_prefill"]["median_ms"] for k in ("text", "latent"))
            lines.append(
                f"e2e      {name:14s} B={b:>3s}: text {t:.1f} ms, latent {z:.1f} ms (encoder + adapter + prefill)"
            )
    for k, v in result["ratios"].items():
        if not isinstance(v, dict):
            lines.append(f"ratio    {k} = {v:.2f}")
    for k, v in result.get("compile_s", {}).items():
        if v is not None:
            lines.append(f"compile  {k}: first call {v:.1f} s over the median (compilation)")
    for k, v in result["targets"].items():
        if v["value"] is not None:
            lines.append(f"target   {k} >= {v['target']}: {'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)
