"""Formatting shared by the quality tables (mean ± standard deviation over seeds)."""

from __future__ import annotations

import statistics


def mean_std(values: list[float], digits: int = 1) -> str:
    """``mean ± std`` of ``values`` (sample standard deviation), the value alone for one, n/a for
    none."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
