"""The one timing protocol every backend is measured with.

Warm up (first calls allocate, JIT, fill caches), then time single calls with perf_counter_ns until both a minimum
number of calls and a minimum time are reached. Percentiles of single calls, not a mean of batches, so that the
tail (p99) is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class TimingConfig:
    warmup_s: float = 0.3
    min_calls: int = 200
    min_time_s: float = 1.0
    max_calls: int = 100_000


def measure(fn: Callable[[], object], cfg: TimingConfig = TimingConfig()) -> dict:
    """Latency percentiles of `fn()` in milliseconds: {"p50", "p90", "p99", "mean", "calls"}."""
    end = time.perf_counter() + cfg.warmup_s
    fn()
    while time.perf_counter() < end:
        fn()
    times_ns = []
    stop = time.perf_counter_ns() + int(cfg.min_time_s * 1e9)
    while (len(times_ns) < cfg.min_calls or time.perf_counter_ns() < stop) and len(times_ns) < cfg.max_calls:
        t0 = time.perf_counter_ns()
        fn()
        times_ns.append(time.perf_counter_ns() - t0)
    return summarize(np.asarray(times_ns, dtype=np.float64) / 1e6)


def summarize(ms: np.ndarray) -> dict:
    """Single calls' milliseconds to {"p50", "p90", "p99", "mean", "calls"}."""
    ms = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()), "calls": len(ms)}
