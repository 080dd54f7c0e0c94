"""Timing helpers the benchmarks share: wall times in milliseconds and their summaries."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def timed(fn: Callable[[], object], repeat: int, *, warm_up: bool = False) -> list[float]:
    """One wall time per call, in milliseconds; ``warm_up`` runs ``fn`` once untimed first
    (first calls allocate buffers and load libraries)."""
    if warm_up:
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def med(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]
