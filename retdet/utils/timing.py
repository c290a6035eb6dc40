"""Timing for benchmarks: medians of repeated runs after warm-up, synchronising CUDA."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch


def time_ms(fn: Callable[[], object], *, device: str = "cpu", warmup: int = 3, runs: int = 20) -> List[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``fn`` after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], **kwargs) -> float:
    return statistics.median(time_ms(fn, **kwargs))


def interleaved_ms(fns: Dict[str, Callable[[], object]], *, device: str = "cpu", warmup: int = 2,
                   runs: int = 10) -> Dict[str, List[float]]:
    """Milliseconds per call of each function, calling them in turn (a, b, a, b, ...), so that
    drifts of a noisy machine (clock, other load) hit every side alike."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
