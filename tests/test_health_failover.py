"""Two real daemons on the sim board: chassis faults lower health, hand over, and alarm with hysteresis.

The sim board's chassis (sim/chassis.py) has two PMBus supplies of weight 40:
with psu2 already pulled, psu1 losing AC takes alpha's health from 60 to 20,
below the critical 30, so alpha hands over to the healthy bravo.

The racks (tests/conftest.py) give every simulated sensor a generous timeout:
on a loaded machine a read that ran into the board's 1-2 s timeout (the disk
and chassis sensors run fake smartctl/dmidecode processes) would count
UNKNOWN, cost half its weight and raise an alarm of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import wait_for
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration


def sensor(rack: TwoNodeRack, node: str, name: str) -> dict:
    """One sensor's row of the node's `sensors` answer (lighter than the whole status)."""
    return next(row for row in rack.control(node, {"cmd": "sensors"}, timeout=10) if row["name"] == name)


def alarm_starting(prefix: str) -> Callable[[dict], bool]:
    """A wait condition on a node's light state: an active alarm's text starts with ``prefix``."""
    return lambda brief: any(alarm["text"].startswith(prefix) for alarm in brief["alarms"])


def test_psu_ac_loss_with_the_other_supply_absent_hands_over_and_clears(racks: Callable[..., TwoNodeRack],
                                                                         tmp_path: Path) -> None:
    rack = racks(history=True)
    assert rack.state("alpha") == "ACTIVE"
    rack.wait_until("alpha", lambda _: sensor(rack, "alpha", "psu1")["readings"] > 0, 15,
                    what="the first PSU reading")
    assert rack.brief("alpha")["health"] == 100

    rack.control("alpha", {"cmd": "sim.set", "target": "psu2", "settings": {"present": "no"}})
    rack.wait_until("alpha", lambda brief: brief["health"] == 60, 15, what="psu2 missing to cost 40 points")
    assert rack.state("alpha") == "ACTIVE"  # degraded, not critical: no handover
    assert any(a.startswith("psu2 CRITICAL") and "not present" in a for a in rack.alarms("alpha"))

    result = rack.cli("alpha", "sim", "set", "psu1", "ac=lost")
    assert result.returncode == 0, result.stderr
    rack.wait_state("bravo", "ACTIVE", timeout=15)
    alpha = rack.status("alpha")
    assert alpha["state"] == "STANDBY" and alpha["health"] == 20
    assert any(a["text"].startswith("psu1 CRITICAL") and "AC input lost" in a["text"] for a in alpha["alarms"])
    assert rack.active_nodes() == ["bravo"]
    kinds = [(e["kind"], e["data"].get("sensor")) for e in rack.events("alpha")]
    assert ("alarm.raised", "psu1") in kinds and ("alarm.raised", "psu2") in kinds
    health_events = [e["data"] for e in rack.events("alpha") if e["kind"] == "health"]
    assert {"health": 20, "previous": 60, "source": "sensors"} in health_events

    # `tandem sensors` lists the fault with its values.
    listing = rack.cli("alpha", "sensors")
    assert listing.returncode == 0 and "psu1" in listing.stdout and "CRITICAL" in listing.stdout

    # AC back: the alarm clears only after clear_after (2) good readings, then health recovers.
    rack.control("alpha", {"cmd": "sim.set", "target": "psu1", "settings": {"ac": "ok"}})
    clearing = rack.wait_until("alpha", lambda _: "clearing 1/2" in (row := sensor(rack, "alpha", "psu1"))["summary"]
                               and row, 15, what="the first good reading to count towards clearing")
    assert clearing["state"] == "CRITICAL"  # the same row: one good reading does not clear it
    rack.wait_until("alpha", lambda _: sensor(rack, "alpha", "psu1")["state"] == "OK", 15, what="the alarm to clear")
    rack.wait_until("alpha", lambda brief: brief["health"] == 60, 15, what="health back to 60 (psu2 still missing)")
    cleared = [e for e in rack.events("alpha") if e["kind"] == "alarm.cleared"]
    assert [e["data"]["sensor"] for e in cleared] == ["psu1"]
    assert rack.state("bravo") == "ACTIVE"  # failback is "never" by default: no surprise move back

    # History: numeric readings and the score are recorded and graphable.
    wait_for(lambda: (tmp_path / "alpha/state/history/psu1/vin.rrd").exists(), 30,
             what="the history writer to create psu1.vin")
    png = tmp_path / "health.png"
    graph = rack.cli("alpha", "graph", "health", "psu1.vin", "--since", "10m", "-o", str(png))
    assert graph.returncode == 0, graph.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_silencing_alarms_and_a_new_alarm_sounds_again(rack: TwoNodeRack) -> None:
    rack.control("bravo", {"cmd": "sim.set", "target": "inlet", "settings": {"temp": "45"}})
    rack.wait_until("bravo", alarm_starting("inlet WARNING"), 15, what="the inlet warning")
    assert rack.brief("bravo")["alarm_silenced"] is False
    silenced = rack.cli("bravo", "silence")
    assert silenced.returncode == 0 and "silenced 1 alarm" in silenced.stdout
    assert rack.brief("bravo")["alarm_silenced"] is True
    # The same alarm with a new value stays silenced; a new one (the disk) sounds again.
    rack.control("bravo", {"cmd": "sim.set", "target": "inlet", "settings": {"temp": "46"}})
    rack.control("bravo", {"cmd": "sim.set", "target": "md0", "settings": {"state": "degraded"}})
    sounding = rack.wait_until("bravo", lambda brief: alarm_starting("md0 CRITICAL")(brief) and brief, 15,
                               what="the RAID alarm")
    assert sounding["alarm_silenced"] is False  # the same answer that showed the new alarm
    assert any(e["kind"] == "alarm.silenced" and e["data"]["source"] == "cli" for e in rack.events("bravo"))
    # Silenced, cleared, back again: it is a new alarm and sounds.
    rack.cli("bravo", "silence")
    assert rack.brief("bravo")["alarm_silenced"] is True
    rack.control("bravo", {"cmd": "sim.set", "target": "md0", "settings": {"state": "healthy"}})
    rack.wait_until("bravo", lambda brief: not alarm_starting("md0")(brief), 20, what="the RAID alarm to clear")
    rack.control("bravo", {"cmd": "sim.set", "target": "md0", "settings": {"state": "degraded"}})
    sounding = rack.wait_until("bravo", lambda brief: alarm_starting("md0 CRITICAL")(brief) and brief, 15,
                               what="the RAID alarm again")
    assert sounding["alarm_silenced"] is False
    rack.control("bravo", {"cmd": "sim.set", "target": "chassis", "settings": {"thermal": "Critical"}})
    rack.wait_until("bravo", alarm_starting("chassis CRITICAL"), 15, what="the chassis thermal state from dmidecode")
    bad = rack.cli("bravo", "sim", "set", "psu9", "ac=lost")
    assert bad.returncode == 1 and "no simulated device 'psu9'" in bad.stderr
