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


def in_rounds(calls: dict[str, Callable[[], object]], cfg: TimingConfig, rounds: int) -> dict[str, list[float]]:
    """Each call's p50 (ms) in each of `rounds` rounds that take turns over the calls. This VM drifts between
    fast and slow phases that last seconds to minutes: taking turns spreads every call over the phases, and a
    ratio within one round compares like with like (`versus`)."""
    p50: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            p50[name].append(measure(fn, cfg)["p50"])
    return p50


def versus(p50: dict[str, list[float]], base: str) -> dict[str, dict[str, float]]:
    """Each call against `base`, from `in_rounds`' figures: "ms" (median of its round medians), "ratio" (that
    over base's) and "paired" (the median over rounds of the ratio within the round)."""
    ref = np.asarray(p50[base])
    return {name: {"ms": float(np.median(v)), "ratio": float(np.median(v) / np.median(ref)),
                   "paired": float(np.median(np.asarray(v) / ref))} for name, v in p50.items() if name != base}
