"""LAN arbitration with real daemons: never two holders of the shared address.

The two situations of issue 13, on a simulated rack whose LAN (`sim.lan`)
keeps a box's addresses when its daemon dies, and answers duplicate-address
probes as a real LAN does:

* the ACTIVE daemon dies and nothing releases its box: the standby must not
  claim the address while the dead box still answers for it, must say who
  holds it, and must take over once `tandem release` let go;
* both heartbeat links are cut while both boxes stay on the LAN: the standby
  must leave the address with the ACTIVE node that still holds it.

A watcher samples the LAN's holders all along; the assertions are on what
it saw, not on the final state alone.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.lan import host_mac
from sim.rack import TwoNodeRack

from helpers import holders_watched, lan_alarm

IP = "192.0.2.10"
SHARED = {"address": f"{IP}/24", "interface": "eth0"}

pytestmark = pytest.mark.integration


def test_the_standby_waits_while_a_dead_daemons_box_still_holds_the_address(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True, supervise=False,
                 extra={"arbitration": {"held_escalate_s": 2}})
    assert rack.holders(IP) == ["alpha"]
    with holders_watched(rack, IP) as seen:
        rack.kill("alpha")  # SIGKILL, and no supervisor: alpha's box keeps the address
        rack.wait_until("bravo", lambda s: host_mac("alpha") in lan_alarm(rack, "bravo"), timeout=20)
        assert rack.state("bravo") == "STANDBY"
        assert f"held by {host_mac('alpha')}" in rack.brief("bravo")["reason"]
        # Past held_escalate_s of silence the alarm says what to do.
        rack.wait_until("bravo", lambda s: "tandem release" in lan_alarm(rack, "bravo"), timeout=20)
        critical = [a for a in rack.status("bravo")["alarms"] if a["source"] == "lan"]
        assert critical[0]["level"] == "critical" and "power alpha off" in critical[0]["text"]
        assert rack.state("bravo") == "STANDBY" and rack.holders(IP) == ["alpha"]
        released = rack.cli("alpha", "release", "--source", "operator")
        assert released.returncode == 0, released.stderr
        rack.wait_state("bravo", "ACTIVE", timeout=20)
        rack.wait_for(lambda: rack.holders(IP) == ["bravo"], 10, what="bravo the only holder")
    assert seen and max(len(holders) for holders in seen) == 1, "two boxes held the address at once"
    blocked = [e["data"]["code"] for e in rack.events("bravo") if e["kind"] == "takeover.blocked"]
    assert blocked == ["address_held", "address_held_long"]  # once per kind, not once per probe round
    assert rack.status("bravo")["lan"]["rounds"] > 0


def test_both_heartbeat_links_cut_leave_the_address_with_the_active_node(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True)
    with holders_watched(rack, IP) as seen:
        rack.cut_network()
        rack.cut_serial()
        rack.wait_until("bravo", lambda s: host_mac("alpha") in lan_alarm(rack, "bravo"), timeout=20)
        assert rack.state("alpha") == "ACTIVE" and rack.state("bravo") == "STANDBY"
        rack.restore_network()
        rack.restore_serial()
        rack.wait_until("bravo", lambda s: s["peer_alive"] and s["state"] == "STANDBY", timeout=20)
    assert rack.state("alpha") == "ACTIVE" and rack.holders(IP) == ["alpha"]
    assert seen and all(holders == ["alpha"] for holders in seen), sorted({tuple(h) for h in seen})
    assert not [e for e in rack.events("bravo") if e["kind"] == "state" and e["data"]["to"] == "TAKEOVER"]


def test_a_standby_takes_over_at_once_when_the_dead_box_was_released(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True)  # supervised: the release follows the kill
    with holders_watched(rack, IP) as seen:
        rack.kill("alpha")
        rack.wait_released("alpha")
        rack.wait_state("bravo", "ACTIVE", timeout=20)
        rack.wait_for(lambda: rack.holders(IP) == ["bravo"], 10, what="bravo the only holder")
    assert max(len(holders) for holders in seen) == 1, "two boxes held the address at once"


def test_without_arbitration_a_promote_that_finds_the_address_held_lets_go_and_retries(
        racks: Callable[..., TwoNodeRack]) -> None:
    """Issue 13's `probe = true` case: never ACTIVE without the address, and not given up either."""
    rack = racks(shared_ips=[dict(SHARED, probe=True)], supervise=False, extra={"actions": {"veto_backoff_s": 2}})
    rack.kill("alpha")  # nothing releases alpha's box: its address still answers
    failed = rack.wait_event("bravo", lambda e: e["kind"] == "promote.failed", timeout=20,
                             what="bravo's promote to find the address held")
    assert "already answers" in failed["data"]["detail"] and "retrying" in failed["data"]["action"]
    rack.wait_until("bravo", lambda s: s["state"] == "STANDBY" and any(
        a["source"] == "actions" and "not carrying the calls" in a["text"] for a in s["alarms"]), timeout=20,
        full=True)
    assert rack.holders(IP) == ["alpha"]
    released = rack.cli("alpha", "release", "--source", "operator")
    assert released.returncode == 0, released.stderr
    rack.wait_state("bravo", "ACTIVE", timeout=30)  # the next try, after the back-off, finds it free
    assert rack.holders(IP) == ["bravo"]
    assert rack.status("bravo")["shared_ips"][0]["present"]
