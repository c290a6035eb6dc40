"""Timing for benchmarks: medians of repeated runs after warm-up, synchronising CUDA."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List

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
