"""Throughput harness (``latentwire bench``): how close the real training step gets to the hardware.

In one run, on random-weight receivers in the published shapes (:mod:`latentwire.models.synthetic`):

(a) **ceiling**: per receiver, the minimal work of a latent training row: a bare frozen forward +
    backward over only the columns that depend on Z — a leaf (B, M + S_suf + A, d) for the M soft
    tokens, the scaffold's suffix and the A answer tokens — reading the scaffold's constant head
    (S_pre tokens) from a K/V prefix computed once (:mod:`latentwire.scaffold_cache`); answer CE from
    the kept logits only, no prompt building; both receivers in sequence form the bare
    multi-receiver step. ``ceiling_full_prompt`` is the earlier ceiling, kept for continuity: the
    same leaf over the whole row (S_pre + M + S_suf + A columns), no mask.
(b) **step**: the project's own Stage B step, :func:`latentwire.training.step.train_step` (encoder, every
    adapter, every enabled loss, the optimizer), on the same batch.
(c) **eval**: per receiver, the evaluation path's prompt building (the real prompt makers) and
    :func:`latentwire.generation.generate_and_score`'s prefill and per-token decode, for the
    ``text_tokens`` text prompt and for the latent prompt.

Timed regions are bracketed by a device synchronise, warm-up iterations are dropped, and medians and
p90s are reported with samples/min = B / median (:mod:`latentwire.evaluation.timing`). ``ratios`` holds
(b)/(a) throughput and text/latent prefill time. Shapes: B batch, M soft tokens per receiver, A answer
tokens (with the end-of-answer id), T_p latent prompt length (scaffold S + M), d receiver width.
"""

from latentwire.bench.args import TARGETS, BenchArgs, resolve_dtype
from latentwire.bench.run import run_bench

__all__ = ["TARGETS", "BenchArgs", "resolve_dtype", "run_bench"]
