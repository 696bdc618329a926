"""Test helpers shared by every test module: the one way to wait, and the simulated rack's checks.

Waiting is always on a condition, with a generous timeout that is only waited
out when the test fails: the CI box is a loaded 2-core machine, so nothing
here asserts how fast something happened, only that (and in which order) it did.
The simulated rack's fixtures are in conftest.py (``racks``); what a rack
itself can wait for (a state, a journal event, heartbeat ticks) is in
:class:`sim.rack.TwoNodeRack`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sim.rack import NODES, TwoNodeRack

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


# ---------------------------------------------------------------- racks

# Test racks: the simulated sensors (some of them subprocesses) get as long as they need on a
# loaded machine; a read that ran into the board's 1-2 s timeout would count UNKNOWN and cost health.
TEST_SENSOR_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 30.0


def new_rack(base: Path, **options: Any) -> TwoNodeRack:
    """A rack (not started) as the tests build it: generous sensor timeouts unless ``options`` say otherwise.

    Prefer the ``racks`` fixture, which also stops it; this is for tests that start nodes by hand.
    """
    options.setdefault("sensor_timeout_s", TEST_SENSOR_TIMEOUT_S)
    return TwoNodeRack(base, **options)


def state_events(rack: TwoNodeRack, name: str, to: str) -> list[dict[str, Any]]:
    """The node's journaled changes to state ``to``, oldest first."""
    return [e for e in rack.events(name) if e["kind"] == "state" and e["data"]["to"] == to]


def assert_steady(rack: TwoNodeRack, pair: tuple[str, str], heartbeats: int) -> None:
    """Nothing happens: (alpha, bravo) are in the states ``pair`` and stay there for ``heartbeats``.

    "Stay" is judged by each daemon's own clock and journal, not by a sleep: each
    node's heartbeat tick counter goes ``heartbeats`` ticks on, and neither
    journals a change of state in that time.
    """
    marks = {name: rack.brief(name) for name in NODES}
    assert all(marks.values()), f"a node did not answer: {marks}"
    assert tuple(marks[name]["state"] for name in NODES) == pair, {n: m["state"] for n, m in marks.items()}
    for name in NODES:
        rack.wait_ticks(name, heartbeats, start=marks[name]["tick"])
    for name in NODES:
        changes = [e["data"] for e in rack.events(name, since=marks[name]["event_id"]) if e["kind"] == "state"]
        assert changes == [], f"{name} changed state within {heartbeats} heartbeats: {changes}"

