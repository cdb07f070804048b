"""Timed regions on a device: warm-up calls, a synchronise around each timed call, median / p90.

Latency is measured inside Python (the Snakemake ``benchmark:`` files time whole jobs only): the
first ``warmup`` calls are dropped, the device is synchronised before and after every timed call
(CUDA kernels run asynchronously), and each summary keeps every timed value beside its median, p90
and mean. A record names the device it was measured on (:func:`device_info`). Used by the
throughput harness (:mod:`latentwire.bench`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

from latentwire.evaluation.metrics import percentile_summary


def timed(
    fn: Callable[[], object],
    warmup: int,
    iters: int,
    device: torch.device,
    warmup_times: list[float] | None = None,
) -> list[float]:
    """Wall seconds of each of ``iters`` calls after ``warmup`` untimed ones (whose seconds go to
    ``warmup_times`` when given: the first holds compilation, if any)."""
    for _ in range(warmup):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if warmup_times is not None:
            warmup_times.append(time.perf_counter() - t0)
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize_times(
    times_s: list[float], batch_size: int | None = None, warmup_s: list[float] | None = None
) -> dict:
    """Median / p90 / mean in ms, each timed value, and samples/min at the median; with ``warmup_s``
    also the warm-up calls and ``first_call_overhead_s`` (first warm-up minus the median: compile time)."""
    ms = [t * 1000 for t in times_s]
    p = percentile_summary(ms)
    out = {"median_ms": p["median"], "p90_ms": p["p90"], "mean_ms": p["mean"], "times_ms": ms}
    if warmup_s:
        out["warmup_ms"] = [t * 1000 for t in warmup_s]
        out["first_call_overhead_s"] = warmup_s[0] - p["median"] / 1000
    if batch_size is not None:
        out["samples_per_min"] = batch_size * 60_000 / p["median"]
    return out


def device_info(device: torch.device) -> dict:
    """GPU name, capability and memory on CUDA; processor and torch threads on CPU."""
    info: dict = {"type": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(
            name=prop.name,
            capability=f"{prop.major}.{prop.minor}",
            memory_gb=round(prop.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
