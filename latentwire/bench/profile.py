"""Where a training step's time goes: a few steps under ``torch.profiler``, summarised for the JSON.

``latentwire bench`` with ``profile_steps: N`` runs N more Stage B steps after the timed ones with
the profiler on and keeps (a) each labelled region of :func:`latentwire.training.step.train_step`
(``encode``, ``forward:<model>``, ``backward:<model>``, ``encoder_backward``, ``update``) with its host
time, (b) the device's busy time against the wall time (the gap is the device waiting on the host),
and (c) the operators that took the most device (else host) time. Profile first, then optimise
(issue #17).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from latentwire.evaluation.timing import sync

REGIONS = ("encode", "forward:", "backward:", "encoder_backward", "update")


def _device_us(evt) -> float:
    """An event's own device time in µs, under the attribute name this torch version uses."""
    for key in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, key):
            return float(getattr(evt, key))
    return 0.0


def _total_device_us(evt) -> float:
    for key in ("device_time_total", "cuda_time_total"):
        if hasattr(evt, key):
            return float(getattr(evt, key))
    return 0.0


def profile_step(step: Callable[[], None], n: int, device: torch.device, top: int = 25) -> dict:
    """Run ``step`` ``n`` times under the profiler; per-step summary (ms) of regions and top operators."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(n):
            step()
        sync(device)
    wall_ms = (time.perf_counter() - t0) * 1000 / n
    events = prof.key_averages()
    regions = {
        e.key: {
            "host_ms": round(e.cpu_time_total / 1000 / n, 2),
            "device_ms": round(_total_device_us(e) / 1000 / n, 2),
        }
        for e in events
        if e.key.startswith(REGIONS)
    }
    ops = [e for e in events if not e.key.startswith(REGIONS) and not e.key.startswith("ProfilerStep")]
    busy_ms = sum(_device_us(e) for e in ops) / 1000 / n
    by = _device_us if device.type == "cuda" else (lambda e: float(e.self_cpu_time_total))
    ops.sort(key=by, reverse=True)
    return {
        "steps": n,
        "wall_ms_per_step": round(wall_ms, 2),
        "device_busy_ms_per_step": round(busy_ms, 2),  # 0 on CPU: no device timeline
        "regions": regions,
        "top_ops": [
            {
                "op": e.key,
                "calls_per_step": e.count / n,
                "self_device_ms": round(_device_us(e) / 1000 / n, 3),
                "self_host_ms": round(e.self_cpu_time_total / 1000 / n, 3),
            }
            for e in ops[:top]
        ],
    }
