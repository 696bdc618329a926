"""How late the heartbeat ticks ran: the figure that shows whether anything delays a heartbeat.

Percentiles are nearest-rank on purpose (docs/library-decisions.md,
"Percentiles"): every figure is a lateness that was actually observed, it
works for a single sample, and it does not move when the same samples are
reported again. ``statistics.quantiles(method="inclusive")`` interpolates
instead and, on Python 3.11, refuses fewer than two samples. The benchmarks
use the same :func:`percentile`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

LAG_SAMPLES = 3000  # the last five minutes of heartbeat ticks at 10 Hz


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


class TickLog:
    """The lateness of recent heartbeat ticks (how long after its schedule each one ran)."""

    def __init__(self, samples: int = LAG_SAMPLES) -> None:
        self.max_lag = 0.0
        self._lags: deque[tuple[int, float]] = deque(maxlen=samples)  # (tick, seconds late)

    def record(self, tick: int, lag: float) -> None:
        """Tick ``tick`` ran ``lag`` seconds after its schedule."""
        self.max_lag = max(self.max_lag, lag)
        self._lags.append((tick, lag))

    def lateness(self, since_tick: int = -1) -> dict[str, float | int]:
        """p50, p99 and max lateness in ms of the recorded ticks after ``since_tick``."""
        lags = [lag for tick, lag in self._lags if tick > since_tick]
        if not lags:
            return {"samples": 0}
        return {"samples": len(lags), "p50": round(percentile(lags, 50) * 1000, 3),
                "p99": round(percentile(lags, 99) * 1000, 3), "max": round(max(lags) * 1000, 3)}
