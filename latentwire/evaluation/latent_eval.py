"""Evaluation of a trained interlingua: each receiver's latent, its controls, the int8 wire, joint rescoring.

One path for every interlingua (a trained experiment, ``latentwire eval-latent``, or a wire
extended to a new receiver, ``latentwire eval-added-receiver``): per receiver and variant it
writes ``{out_dir}/{model}/{variant}/predictions.jsonl`` + ``metrics.json``, then
``{out_dir}/joint.json`` over every receiver. System names: ``{system}``, ``{system}:shuffled``,
``...:zero``, one per wire format (``...:int8``; ``...:int4``, ``...:pq``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from latentwire.evaluation.evaluate import evaluate, model_view
from latentwire.evaluation.joint import rescore_jointly
from latentwire.io import write_json, write_jsonl
from latentwire.latent.interlingua import Interlingua
from latentwire.latent.payload import payload_bytes
from latentwire.latent.prompts import donor_map, latent_prompt_maker
from latentwire.latent.wire import Wire, WireArgs, mean_bytes
from latentwire.models import LoadedModel

log = logging.getLogger(__name__)

# variant folder -> (system-name suffix, control, wire format for a round trip); the wire formats of
# latent.wire.formats follow these (see variants)
VARIANTS = {
    "latent": ("", "none", None),
    "shuffled": (":shuffled", "shuffled", None),
    "zero": (":zero", "zero", None),
}


def variants(wire: WireArgs) -> dict[str, tuple[str, str, str | None]]:
    """Every evaluated variant: the latent, its controls, then one per wire format."""
    return {**VARIANTS, **{f: (f":{f}", "none", f) for f in wire.formats}}


def evaluate_latent(
    il: Interlingua,
    lms: list[LoadedModel],
    run,
    examples: list[dict],
    out_dir: str | Path,
    system: str,
    prov: dict,
    rescore_only: Sequence[str] = (),
    wire: Wire | None = None,
) -> dict[str, list[dict]]:
    """Evaluate every receiver of ``lms`` on ``examples`` (``run``: the LatentRunArgs) and rescore
    jointly; returns the main latent's prediction rows per receiver.

    ``rescore_only``: receivers whose main latent runs (joint rescoring reads its predictions) and
    comes back in the result, but with no variant and no files: not systems of this evaluation
    (an extended wire's old receivers, which are the experiment's own systems).

    ``wire``: the wire formats, fitted where a format learns (pq: fitted on train texts by the caller);
    default: ``latent.wire`` unfitted, which serves int8 / int4.

    ``run.prompt`` is the run's global prompt (k-shot examples attached for every receiver, see
    :func:`latentwire.prompt.attach_shots`); each receiver's scaffold, gold ids, stop rule and joint
    rescoring use its own merged prompt (:func:`latentwire.prompt.prompt_for`, applied by
    ``latent_prompt_maker``, ``evaluate`` and ``rescore_jointly``), while the encoder reads the run's
    content text, one Z for every receiver.
    """
    il.eval()
    wire = wire if wire is not None else Wire(run.latent.wire, run.latent.encoder.d_z)
    il.memoize_latents()  # each test text is encoded once for every variant, receiver and rescoring
    donors = donor_map([model_view(e) for e in examples])
    total = il.wire_slots()
    d_z = run.latent.encoder.d_z
    rows_by_model = {}
    for lm in lms:
        for variant, (suffix, control, fmt) in variants(run.latent.wire).items():
            if lm.spec.name in rescore_only and variant != "latent":
                continue
            name = f"{system}{suffix}"
            zt = (lambda z, f=fmt: wire.roundtrip(z, f)) if fmt else None
            maker = latent_prompt_maker(lm, il, run.prompt, control, zt, donors)
            rows, summary = evaluate(lm, examples, maker, run.prompt, run.eval, desc=f"{lm.spec.name}/{name}")
            slots = [r.get("wire_slots", total) for r in rows]  # per message (fewer with latent.trim_pad)
            if fmt:
                summary.update(wire.facts(fmt, slots))
            summary.update(
                {
                    "system": name,
                    "kind": "latent",
                    "control": control,
                    "reading_head": run.latent.head_name(),
                    "provenance": prov,
                    "payload_bytes_by_format": {
                        **{
                            f: mean_bytes(slots, lambda n, f=f: payload_bytes(n, d_z, f))
                            for f in ("fp32", "fp16", "int8")
                        },
                        **{f: wire.facts(f, slots)["payload_bytes"] for f in run.latent.wire.formats},
                    },
                }
            )
            if not suffix:
                rows_by_model[lm.spec.name] = rows
            if lm.spec.name in rescore_only:
                continue
            out = Path(out_dir) / lm.spec.name / variant
            write_jsonl(out / "predictions.jsonl", rows)
            write_json(out / "metrics.json", summary)
            log.info(
                "%s %s: F1 %.3f EM %.3f unique %.2f",
                lm.spec.name,
                name,
                summary["f1"],
                summary["em"],
                summary["unique_prediction_ratio"],
            )
    joint = rescore_jointly(lms, il, run.prompt, examples, rows_by_model, run.eval.batch_size)
    write_json(Path(out_dir) / "joint.json", {**joint, "provenance": prov})
    return rows_by_model
