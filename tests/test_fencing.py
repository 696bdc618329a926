"""Self-fencing in two real daemons: a stalled or isolated ACTIVE node gets out of the way."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from firmware.core.watchdog import StallFence
from helpers import state_events
from sim.rack import TwoNodeRack


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A witness target that refuses connections (bound, never listening)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    yield f"tcp://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()


@pytest.mark.integration
def test_isolated_active_fences_itself_before_the_peer_takes_over(racks: Callable[..., TwoNodeRack],
                                                                  unreachable: str) -> None:
    rack = racks(witness_targets={"alpha": unreachable},
                 relay_groups=[{"name": "trunks", "outputs": ["trunk:1"], "settle_ms": 100}])
    rack.cut_network()
    rack.cut_serial()
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    rack.wait_state("alpha", "STANDBY", timeout=10)
    fence = [e for e in rack.events("alpha") if e["kind"] == "fence"]
    assert fence and fence[-1]["data"]["cause"] == "isolated"
    released = state_events(rack, "alpha", "STANDBY")[-1]["time"]
    took = state_events(rack, "bravo", "TAKEOVER")[-1]["time"]
    assert released <= took, "alpha must let go before bravo's deadtime runs out"
    alpha_opened = max(e["time"] for e in rack.status("alpha")["relays"][0]["timeline"] if not e["energized"])
    bravo_closed = min(e["time"] for e in rack.status("bravo")["relays"][0]["timeline"] if e["energized"])
    assert alpha_opened <= bravo_closed


@pytest.mark.integration
def test_stall_fence_opens_the_relays_before_the_peer_closes_its_own(racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(relay_groups=[{"name": "trunks", "outputs": ["trunk:1", "trunk:2"], "settle_ms": 0}])
    rack.control("alpha", {"cmd": "sim.stall", "seconds": 1.0}, timeout=20)  # returns when the stall ends
    assert rack.wait_pair(timeout=10) == "bravo"
    alpha = rack.status("alpha")["relays"][0]["timeline"]
    bravo = rack.status("bravo")["relays"][0]["timeline"]
    opened = min(e["time"] for e in alpha if not e["energized"])
    closed = min(e["time"] for e in bravo if e["energized"])
    # Even with no settle delay, alpha's fence thread let go while its loop was still stuck.
    assert opened < closed, f"alpha opened {opened - closed:+.3f} s after bravo closed"


@pytest.mark.integration
def test_stalled_active_fences_itself_when_it_resumes(rack: TwoNodeRack) -> None:
    rack.control("alpha", {"cmd": "sim.stall", "seconds": 1.0}, timeout=20)
    fence = rack.wait_event("alpha", lambda e: e["kind"] == "fence", timeout=10, what="alpha's fence")
    assert fence["data"]["cause"] == "stall" and fence["data"]["stalled_s"] >= 0.9
    assert rack.wait_pair(timeout=10) == "bravo"
    assert rack.state("alpha") == "STANDBY"


class FakeClock:
    """A monotonic clock the test moves by hand (in binary fractions of a second, so sums are exact)."""

    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_stall_fence_fires_once_per_stall_and_only_while_holding() -> None:
    clock = FakeClock()
    released: list[float] = []
    fence = StallFence(0.25, lambda: released.append(clock()), clock=clock)
    fence.tick(holding=False)
    clock.advance(0.5)  # not holding: a silent loop is no reason to release anything
    assert fence.check() is None and fence.fired == 0
    for _ in range(10):  # holding and ticking every 62.5 ms: no fence, the next look due at the limit
        fence.tick(holding=True)
        clock.advance(0.0625)
        assert fence.check() == 0.1875
    assert fence.fired == 0
    last_tick = clock() - 0.0625  # the loop stalls after that tick
    clock.advance(0.125)  # 187.5 ms without a tick: not yet
    assert fence.check() == 0.0625 and fence.fired == 0
    clock.advance(0.0625)  # 250 ms: the limit
    assert fence.check() is None and fence.fired == 1
    assert released == [last_tick + 0.25]
    clock.advance(0.5)
    assert fence.check() is None and fence.fired == 1  # once per stall
    fence.tick(holding=True)  # the loop resumes, then stalls again
    clock.advance(0.25)
    assert fence.check() is None and fence.fired == 2


def test_stall_fence_thread_releases_when_the_ticks_stop() -> None:
    released = threading.Event()
    fence = StallFence(0.2, released.set)
    fence.start()
    try:
        fence.tick(holding=True)  # wakes the idle thread; no tick follows: the loop stalled
        assert released.wait(10)
        assert fence.fired == 1
        released.clear()
        fence.tick(holding=True)  # resumes (re-arms the fenced thread), then stalls again
        assert released.wait(10) and fence.fired == 2
    finally:
        fence.stop()
