"""Percentiles, medians and rates used by every scenario."""

from __future__ import annotations

import statistics


def percentile(values, pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def median(values) -> float:
    return float(statistics.median(values))


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None
