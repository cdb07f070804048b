"""Where a training step's time goes: a few steps under ``torch.profiler``, summarised for the JSON.

``latentwire bench`` with ``profile_steps: N`` runs N more Stage B steps after the timed ones with
the profiler on and keeps (a) each labelled region of :func:`latentwire.training.step.train_step`
(``encode``, ``forward:<model>``, ``backward:<model>``, ``encoder_backward``, ``update``) with its host
time and the device time of the kernels launched inside it (a ``.backward()``'s kernels are launched
from autograd's own thread, so its device time reads 0 and its host time is the whole backward),
(b) the device's busy time (each kernel once) against the wall time (the gap is the device waiting
on the host), and (c) the operators and kernels that took the most device (else host) time. Profile first, then optimise
(issue #17).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.autograd import DeviceType
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
    on_device = [e for e in events if e.device_type == DeviceType.CUDA]  # kernels, copies, GPU ranges
    on_host = [e for e in events if e.device_type != DeviceType.CUDA]  # Python ranges and aten ops
    regions: dict[str, dict] = {}
    for e in events:  # a labelled range shows up once per timeline: host, and its GPU-side copy
        if e.key.startswith(REGIONS):
            r = regions.setdefault(e.key, {"host_ms": 0.0, "device_ms": 0.0})
            if e.device_type != DeviceType.CUDA:
                r["host_ms"] = round(r["host_ms"] + e.cpu_time_total / 1000 / n, 2)
            r["device_ms"] = round(max(r["device_ms"], _total_device_us(e) / 1000 / n), 2)
    kernels = [e for e in on_device if not e.key.startswith(REGIONS)]
    busy_ms = sum(_device_us(e) for e in kernels) / 1000 / n  # each kernel once (not also its aten op)
    ops = [e for e in on_host if not e.key.startswith(REGIONS) and not e.key.startswith("ProfilerStep")]
    by = _device_us if device.type == "cuda" else (lambda e: float(e.self_cpu_time_total))
    ops.sort(key=by, reverse=True)
    kernels.sort(key=_device_us, reverse=True)
    return {
        "steps": n,
        "wall_ms_per_step": round(wall_ms, 2),  # with the profiler's own overhead
        "device_busy_ms_per_step": round(busy_ms, 2),  # 0 on CPU: no device timeline
        "regions": regions,
        "top_ops": [
            {
                "op": e.key,
                "calls_per_step": e.count / n,
                "self_device_ms": round(_device_us(e) / 1000 / n, 3),  # its kernels' time
                "self_host_ms": round(e.self_cpu_time_total / 1000 / n, 3),
            }
            for e in ops[:top]
        ],
        "top_kernels": [
            {
                "kernel": e.key[:160],
                "calls_per_step": e.count / n,
                "device_ms": round(_device_us(e) / 1000 / n, 3),
            }
            for e in kernels[:10]
        ],
    }
