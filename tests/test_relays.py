"""Failover relays in two real daemons on the simulated board (gpiozero mock pins)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration

TRUNKS = {"name": "trunks", "outputs": ["trunk:1", "trunk:2"], "feedback": ["trunk-sense:1", "trunk-sense:2"],
          "settle_ms": 200}


def relays(rack: TwoNodeRack, name: str) -> dict:
    status = rack.status(name)
    assert status is not None, f"{name} did not answer"
    return status["relays"][0]


def energized(rack: TwoNodeRack, name: str) -> list[bool | None]:
    return [o["energized"] for o in relays(rack, name)["outputs"]]


def both_closed(status: dict) -> bool:
    """A wait condition on a node's full status: its trunk relays are both energized."""
    return [o["energized"] for o in status["relays"][0]["outputs"]] == [True, True]


@pytest.fixture
def rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    return racks(relay_groups=[dict(TRUNKS)])


def switch_times(rack: TwoNodeRack, name: str, energized_: bool) -> list[float]:
    return [e["time"] for e in relays(rack, name)["timeline"] if e["energized"] == energized_]


def test_active_node_holds_the_trunks(rack: TwoNodeRack) -> None:
    assert energized(rack, "alpha") == [True, True]
    assert energized(rack, "bravo") == [False, False]
    assert relays(rack, "alpha")["position"] == "active" and relays(rack, "alpha")["mismatch"] is None


def test_planned_handover_is_break_before_make_on_the_relays(rack: TwoNodeRack) -> None:
    assert rack.cli("alpha", "demote").returncode == 0
    rack.wait_until("bravo", both_closed, 10, what="bravo's relays closed", full=True)
    assert energized(rack, "alpha") == [False, False]
    opened = max(switch_times(rack, "alpha", False))
    closed = min(switch_times(rack, "bravo", True))
    gap = closed - opened
    assert gap >= 0.2, f"bravo closed {gap * 1000:.0f} ms after alpha opened; the settle delay is 200 ms"


def test_sigkill_peer_closes_only_after_deadtime_and_settle(rack: TwoNodeRack) -> None:
    killed = rack.kill("alpha", signal.SIGKILL)
    rack.wait_until("bravo", both_closed, 10, what="bravo's relays closed", full=True)
    closed = min(switch_times(rack, "bravo", True))
    took = next((e["time"] for e in rack.events("bravo")
                 if e["kind"] == "state" and e["data"]["to"] == "TAKEOVER" and e["time"] >= killed), None)
    # The killed node's mock pins vanished with its process (the hardware's pull resistors hold the
    # safe level); bravo closes only after declaring alpha dead, and then only after the settle delay.
    assert took is not None and closed - took >= 0.2, f"closed {closed - took:.3f} s after the takeover decision"


def test_stuck_contact_raises_the_alarm(rack: TwoNodeRack) -> None:
    # alpha's contact 1 is stuck open: opening is fine, closing is not confirmed.
    rack.control("alpha", {"cmd": "sim.contact", "input": "trunk-sense:1", "value": False})
    assert rack.cli("bravo", "promote").returncode == 0  # alpha releases; its contact reads off: fine
    rack.wait_until("bravo", both_closed, 10, what="bravo's relays closed", full=True)
    assert rack.cli("alpha", "promote").returncode == 0  # alpha closes, but contact 1 stays open
    rack.wait_until("alpha", lambda status: status["relays"][0]["mismatch"], 10, what="the mismatch alarm on alpha",
                    full=True)
    assert "trunk:1 commanded on but contact trunk-sense:1 reads off" in relays(rack, "alpha")["mismatch"]
    assert any(e["kind"] == "relay.mismatch" for e in rack.events("alpha"))


def test_stuck_contact_blocks_takeover_when_configured(racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(relay_groups=[dict(TRUNKS, on_mismatch="block")], extra={"actions": {"veto_backoff_s": 30}})
    rack.control("bravo", {"cmd": "sim.contact", "input": "trunk-sense:2", "value": False})
    # A planned handover: alpha releases, bravo's takeover fails on its feedback. Asked of bravo, whose
    # promote answers as soon as it fails; alpha's demote would wait its 4.6 s for a takeover that never comes.
    promoted = rack.cli("bravo", "promote")
    assert promoted.returncode == 1 and "promotion did not complete" in promoted.stderr
    failed = rack.wait_event("bravo", lambda e: e["kind"] == "promote.failed", timeout=15,
                             what="bravo's takeover to fail on the feedback")
    assert "takeover blocked" in failed["data"]["detail"]
    rack.wait_state("alpha", "ACTIVE", timeout=15)  # handed back to the healthy peer
    assert energized(rack, "bravo") == [False, False]


def test_peer_never_closes_while_the_releaser_reports_a_welded_contact(rack: TwoNodeRack) -> None:
    # alpha's contact 1 is welded shut: its release cannot be confirmed, so it says so in its heartbeat
    # and bravo's interlock keeps bravo's relays open (two PBXs on one trunk is worse than none).
    rack.control("alpha", {"cmd": "sim.contact", "input": "trunk-sense:1", "value": True})
    promoted = rack.cli("bravo", "promote")  # alpha releases on bravo's request (answers once bravo gave up)
    assert promoted.returncode == 1 and "promotion did not complete" in promoted.stderr
    rack.wait_event("alpha", lambda e: e["kind"] == "demote.failed", timeout=10, what="alpha's failed release")
    rack.wait_event("bravo", lambda e: e["kind"] == "action" and not e["data"]["ok"]
                    and "its release failed" in e["data"]["detail"], timeout=10, what="bravo's interlock to refuse")
    # bravo hands the calls back to alpha, whose (welded) relays carry the trunk anyway.
    rack.wait_state("alpha", "ACTIVE", timeout=10)
    assert energized(rack, "bravo") == [False, False]
    assert all(not e["energized"] for e in relays(rack, "bravo")["timeline"])


def test_short_stalls_leave_the_relays_alone_and_a_long_one_demotes_with_an_alarm(rack: TwoNodeRack) -> None:
    """Issue 14: stalls below `fence_stall` (200 ms of tick lateness) opened the relays while the node said ACTIVE.

    The stall fence and the core share one definition of a stall: short stalls touch nothing; a
    long one opens the relays, the node leaves ACTIVE through its normal path, and an alarm says so.
    """
    rack.wait_until("alpha", both_closed, 10, what="alpha's relays closed", full=True)
    for _ in range(8):  # 140 ms of sleep: the tick up to ~140 ms late; the old thread fired on ~40 % of them
        rack.control("alpha", {"cmd": "sim.stall", "seconds": 0.14}, timeout=20)
    status = rack.status("alpha")
    assert status is not None and status["state"] == "ACTIVE"
    assert energized(rack, "alpha") == [True, True], "a stall below the limit opened the relays"
    assert "stall-fence/warning" not in [a["key"] for a in status["alarms"]]
    rack.control("alpha", {"cmd": "sim.stall", "seconds": 0.8}, timeout=20)
    rack.wait_until("alpha", lambda s: s["state"] != "ACTIVE" and "stall-fence/warning" in [a["key"] for a in s["alarms"]],
                    10, what="alpha out of ACTIVE with the stall-fence alarm", full=True)
    assert energized(rack, "alpha") == [False, False]
    [fenced] = [e for e in rack.events("alpha") if e["kind"] == "fence"]
    assert fenced["data"]["cause"] == "stall"
