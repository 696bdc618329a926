"""Test helpers shared by every test module: the one way to wait.

Waiting is always on a condition, with a generous timeout that is only waited
out when the test fails: the CI box is a loaded 2-core machine, so nothing
here asserts how fast something happened, only that (and in which order) it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 10.0  # generous: waited out only when the condition never comes
FIRST_INTERVAL = 0.002
MAX_INTERVAL = 0.05


def wait_for(predicate: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Polls quickly at first and backs off (to at most 50 ms), so a condition that is
    met at once costs nothing and a long wait does not spin. After ``timeout``
    seconds it fails the test with an AssertionError naming ``what``.
    """
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, MAX_INTERVAL)
