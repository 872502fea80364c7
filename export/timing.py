"""Latency of a call, as the benchmarks report it (p50 / p95 / mean in milliseconds)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def timeit(fn: Callable[[], object], n: int, warmup: int = 5) -> dict[str, float]:
    """Call ``fn`` ``warmup`` + ``n`` times; p50/p95/mean of the last ``n`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    a = np.asarray(times)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean())}
