"""Shared by the benchmarks: percentiles.

Nearest-rank on purpose (docs/library-decisions.md, "Percentiles"): every
figure a benchmark prints is a latency that was actually observed, it works
for a single sample, and it does not move when the same samples are reported
again. ``statistics.quantiles(method="inclusive")`` interpolates between
samples instead (p50 of 10, 20, 30, 40 is 25, not 20), so it changes the
figures that before/after comparisons rely on, and on Python 3.11 it refuses
fewer than two samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of a non-empty sequence.

    The smallest sample with at least q % of the samples at or below it.
    """
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0-100")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
