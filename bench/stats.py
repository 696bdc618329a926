"""Shared by the benchmarks: percentiles, the firmware's own (nearest rank; see firmware/core/ticks.py)."""

from firmware.core.ticks import percentile

__all__ = ["percentile"]
