"""Nearest-rank percentiles (firmware/core/ticks.py): what every benchmark figure and tick lateness is."""

from __future__ import annotations

import statistics
import sys

import pytest

from firmware.core.ticks import percentile


def test_nearest_rank_picks_an_observed_sample() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert [percentile(values, q) for q in (0, 25, 26, 50, 51, 75, 99, 100)] == [10, 10, 20, 20, 30, 30, 40, 40]
    hundred = [float(i) for i in range(100, 0, -1)]
    assert (percentile(hundred, 50), percentile(hundred, 95), percentile(hundred, 99)) == (50, 95, 99)
    assert percentile([7.5], 99) == 7.5  # one sample is its own every percentile


def test_differs_from_statistics_quantiles_inclusive() -> None:
    """Why the benchmarks do not use statistics.quantiles: it interpolates between samples."""
    values = [10.0, 20.0, 30.0, 40.0]
    assert statistics.quantiles(values, n=100, method="inclusive")[49] == 25.0
    assert percentile(values, 50) == 20.0
    if sys.version_info < (3, 13):
        with pytest.raises(statistics.StatisticsError):
            statistics.quantiles([7.5], n=100, method="inclusive")


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_rejects_no_samples_and_bad_q(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)
