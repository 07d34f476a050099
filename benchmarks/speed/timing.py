"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time


def best_interleaved(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function over ``repeats`` interleaved rounds, after one warm-up
    call each: measuring them in turn, round after round, cancels order and warm-up effects."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best
