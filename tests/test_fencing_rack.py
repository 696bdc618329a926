"""Power fencing with real daemons, a real BMC simulator and the real fence agent.

Each box of the rack has a simulated BMC (OpenIPMI's `ipmi_sim`) whose
chassis power is the box (`sim.bmcpower`: power off kills its processes and
takes it off the LAN at once); each node fences its peer with the real
`fence_ipmilan` (from fence-agents, with `ipmitool`).

* a dead daemon's box keeps the shared address and nothing releases it: the
  standby fences it once the address was held for `held_escalate_s`, then
  claims it, and the LAN never shows two holders;
* a total partition (both heartbeat links cut, the LAN switch hung, the
  witness still answering): the standby cannot prove anything on the LAN,
  fences the ACTIVE box and takes over; the ACTIVE node never fences back;
* a standby whose own LAN cable is pulled neither claims nor fences;
* a fence device that does not answer is an alarm before it is needed, and a
  fence that fails blocks the takeover with a critical alarm.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.bmc import missing_tools
from sim.rack import TwoNodeRack

from helpers import holders_watched

IP = "192.0.2.10"
SHARED = {"address": f"{IP}/24", "interface": "eth0"}
FAST_AGENT = {"power_wait": 0}  # the simulated BMC switches at once; a real one needs the default 2 s

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(missing_tools()),
                                 reason=f"fencing needs the Debian packages {', '.join(missing_tools())}")]


def _kinds(rack: TwoNodeRack, name: str, prefix: str) -> list[str]:
    return [e["kind"] for e in rack.events(name) if e["kind"].startswith(prefix)]


def test_a_dead_daemons_box_is_fenced_when_it_holds_the_address_too_long(racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True, fencing=True, supervise=False,
                 fence={"options": FAST_AGENT}, extra={"arbitration": {"held_escalate_s": 1}})
    rack.wait_until("bravo", lambda s: (s.get("fence") or {}).get("device") == "ok", timeout=30,
                        full=True)
    assert rack.holders(IP) == ["alpha"]
    with holders_watched(rack, IP) as seen:
        rack.kill("alpha")  # SIGKILL, guardian first, no supervisor: the box keeps the address
        rack.wait_state("bravo", "ACTIVE", timeout=40)
        rack.wait_for(lambda: rack.holders(IP) == ["bravo"], 10, what="bravo the only holder")
    assert seen and max(len(holders) for holders in seen) == 1, "two boxes held the address at once"
    assert not rack.powered("alpha") and rack.bmcs["alpha"].power() == "off"
    assert _kinds(rack, "bravo", "fence.") == ["fence.device", "fence.start", "fence.done"]
    blocked = [e["data"]["code"] for e in rack.events("bravo") if e["kind"] == "takeover.blocked"]
    assert blocked[:2] == ["address_held", "fencing"]
    status = rack.status("bravo")["fence"]
    assert status["last"]["fenced"] and status["attempts"] == 1
    # Powered on again, alpha boots as a standby behind bravo.
    rack.power_on("alpha")
    rack.wait_state("alpha", "STANDBY", timeout=30)
    assert rack.state("bravo") == "ACTIVE" and rack.holders(IP) == ["bravo"]


def test_a_total_partition_fences_the_active_box_and_it_never_fences_back(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True, fencing=True, fence={"options": FAST_AGENT})
    for name in ("alpha", "bravo"):
        rack.wait_until(name, lambda s: (s.get("fence") or {}).get("device") == "ok", timeout=30,
                        full=True)
    rack.cut_network()
    rack.cut_serial()
    rack.hang_switch()  # neither box can prove anything on the LAN; the witness still answers both
    rack.wait_state("bravo", "ACTIVE", timeout=40)
    assert not rack.powered("alpha") and rack.powered("bravo")
    assert _kinds(rack, "bravo", "fence.") == ["fence.device", "fence.start", "fence.done"]
    assert rack.bmcs["bravo"].power() == "on"


def test_an_active_box_cut_off_from_the_lan_is_fenced_before_the_claim(racks: Callable[..., TwoNodeRack]) -> None:
    """The address looks free (nobody the standby can hear answers), but alpha's own box is silent too:
    it may hold the address behind a pulled cable, and would answer for it when the cable returns."""
    rack = racks(shared_ips=[SHARED], arbitration=True, fencing=True, fence={"options": FAST_AGENT})
    rack.wait_until("bravo", lambda s: (s.get("fence") or {}).get("device") == "ok", timeout=30, full=True)
    with holders_watched(rack, IP) as seen:
        rack.unplug_lan("alpha")
        rack.cut_network()
        rack.cut_serial()
        rack.wait_state("bravo", "ACTIVE", timeout=40)
        assert not rack.powered("alpha")
        rack.plug_lan("alpha")  # the cable returns: alpha's box is off and answers for nothing
        rack.wait_for(lambda: rack.holders(IP) == ["bravo"], 10, what="bravo the only holder")
    assert seen and max(len(holders) for holders in seen) == 1, "two boxes held the address at once"
    reasons = [e["data"]["reason"] for e in rack.events("bravo") if e["kind"] == "takeover.blocked"]
    assert any("alpha does not answer on the LAN" in r for r in reasons), reasons


def test_a_standby_off_the_lan_neither_claims_nor_fences(racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True, fencing=True, fence={"options": FAST_AGENT})
    rack.wait_until("bravo", lambda s: (s.get("fence") or {}).get("device") == "ok", timeout=30, full=True)
    rack.unplug_lan("bravo")  # an integrator's mistake: bravo's LAN cable is not in
    rack.cut_network()
    rack.cut_serial()
    rack.wait_until("bravo", lambda s: "off the LAN" in s["reason"], timeout=20)
    rack.wait_ticks("bravo", 30)  # long enough for a fence or a claim to show
    assert rack.state("bravo") == "STANDBY" and rack.state("alpha") == "ACTIVE" and rack.powered("alpha")
    assert not [k for k in _kinds(rack, "bravo", "fence.") if k != "fence.device"]
    lan = [a for a in rack.status("bravo")["alarms"] if a["source"] == "lan"]
    assert lan and "LAN link down" in lan[0]["text"]


def test_a_broken_fence_device_is_an_alarm_and_a_failed_fence_blocks_the_takeover(
        racks: Callable[..., TwoNodeRack]) -> None:
    rack = racks(shared_ips=[SHARED], arbitration=True, fencing=True,
                 fence={"options": {**FAST_AGENT, "password": "wrong"}, "timeout_s": 20, "monitor_every_s": 1})
    rack.wait_until("bravo", lambda s: any(a["source"] == "fence-device" for a in s["alarms"]), timeout=60, full=True)
    rack.cut_network()
    rack.cut_serial()
    rack.hang_switch()
    rack.wait_until("bravo", lambda s: any(a["source"] == "fence" and a["level"] == "critical"
                                           for a in s["alarms"]), timeout=90, full=True)
    assert rack.state("bravo") == "STANDBY" and rack.powered("alpha") and rack.state("alpha") == "ACTIVE"
    assert "fence.failed" in _kinds(rack, "bravo", "fence.")
