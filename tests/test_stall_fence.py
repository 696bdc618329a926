"""One definition of a stall: the stall-fence thread and the decision core both measure the tick's lateness.

Issue 14: loop stalls of 0.15-0.18 s (below `fence_stall` 0.2 s) made the thread
open the trunk relays while the core, which measured the same stall
differently, stayed ACTIVE: a silent half-state.
"""

from __future__ import annotations

from dataclasses import replace

from clustermodel import TwoNodeModel
from firmware.core import cluster
from firmware.core.states import NodeState, Role
from firmware.core.watchdog import ALARM_HOLD_S, StallFence


class Clock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fence(limit: float = 0.2) -> tuple[StallFence, Clock, list[float]]:
    clock, released = Clock(), []
    return StallFence(limit, lambda: released.append(clock.now), clock=clock), clock, released


def test_a_stall_shorter_than_the_limit_does_not_open_the_relays() -> None:
    stall_fence, clock, released = fence()
    stall_fence.tick(True, next_due=clock.now + 0.1)  # a tick at 100.0; the next one is due at 100.1
    clock.now += 0.1 + 0.18  # the next tick is 180 ms late: less than the 200 ms limit
    assert stall_fence.check() is not None
    assert released == [] and not stall_fence.take_fired() and stall_fence.alarms() == []


def test_the_thread_fires_at_the_lateness_the_core_fences_at() -> None:
    stall_fence, clock, released = fence()
    stall_fence.tick(True, next_due=clock.now + 0.1)
    clock.now += 0.1 + 0.2  # the next tick is exactly the limit late
    assert stall_fence.check() is None
    assert released == [clock.now]
    assert stall_fence.take_fired() and not stall_fence.take_fired()  # the loop is told once
    [alarm] = stall_fence.alarms()
    assert alarm.key == "stall-fence/warning" and "opened the relays" in alarm.text
    clock.now += ALARM_HOLD_S + 1
    assert stall_fence.alarms() == []


def test_not_holding_nothing_is_watched() -> None:
    stall_fence, clock, released = fence()
    stall_fence.tick(False, next_due=clock.now + 0.1)
    clock.now += 5
    assert stall_fence.check() is None and released == []


def _settled_pair() -> TwoNodeModel:
    model = TwoNodeModel(seed=1)
    model.nodes[0].settings = replace(model.nodes[0].settings, role=Role.PRIMARY)
    model.nodes[1].settings = replace(model.nodes[1].settings, role=Role.SECONDARY)
    model.start(0)
    model.start(1)
    model.run_until(2.0)
    assert model.state_of(0) == NodeState.ACTIVE
    return model


def test_the_core_releases_when_told_the_fence_fired_even_if_its_tick_measured_less() -> None:
    """When the thread has opened the relays, the node demotes through its normal path: never ACTIVE with open relays."""
    model = _settled_pair()
    node = model.nodes[0]
    inputs = replace(model._inputs(node), stalled_for_s=0.05)
    state, out = cluster.step(node.settings, node.state, replace(inputs, stall_fenced=True))
    assert state.state == NodeState.RELEASING
    [fenced] = [e for e in out.events if e.kind == "fence"]
    assert fenced.data["cause"] == "stall" and fenced.data["relays_opened_by_thread"] is True
    state, _ = cluster.step(node.settings, node.state, inputs)  # the same tick without the fact: stays
    assert state.state == NodeState.ACTIVE
