"""How late the heartbeat ticks ran: the figure that shows whether anything delays a heartbeat."""

from __future__ import annotations

from collections import deque

LAG_SAMPLES = 3000  # the last five minutes of heartbeat ticks at 10 Hz


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
        ordered = sorted(lag for tick, lag in self._lags if tick > since_tick)
        if not ordered:
            return {"samples": 0}

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        return {"samples": len(ordered), "p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3)}
