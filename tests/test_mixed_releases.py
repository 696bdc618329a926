"""A pair in the middle of an update: two real daemons of releases with different heartbeat protocols.

Bravo is restarted as a release of the next protocol generation (one this
release cannot read, played by ``tests/release_play``): it must hear that
alpha is alive, never take the calls from it, and both must raise a critical
alarm that says why. Once alpha really dies, bravo takes over as usual. A
release of a newer revision of this generation pairs normally.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import assert_steady, state_events, wait_for
from sim.rack import TwoNodeRack

pytestmark = pytest.mark.integration

PLAY_DIR = Path(__file__).parent / "release_play"
HEARTBEATS_PER_DEADTIME = 3


def restart_as_release(rack: TwoNodeRack, name: str, version: str) -> None:
    """Stop `name` and start it again speaking heartbeat protocol `version`."""
    rack.kill(name)
    rack.wait_released(name)
    path = os.pathsep.join(filter(None, [str(PLAY_DIR), os.environ.get("PYTHONPATH")]))
    rack.start_node(name, env={"PYTHONPATH": path, "TANDEM_PLAY_PROTOCOL": version})


def peer_protocol(rack: TwoNodeRack, name: str) -> str | None:
    status = rack.status(name)
    return status["peer"]["incompatible_protocol"] if status else None


def test_an_updated_standby_of_an_unreadable_release_never_takes_the_calls(rack: TwoNodeRack) -> None:
    restart_as_release(rack, "bravo", "0x10")
    wait_for(lambda: peer_protocol(rack, "bravo") == "generation 0 revision 1", what="bravo to hear alpha")
    wait_for(lambda: peer_protocol(rack, "alpha") == "generation 1 revision 0", what="alpha to hear bravo")
    assert rack.status("bravo")["protocol"] == "generation 1 revision 0"  # it plays the new release
    rack.wait_state("bravo", "STANDBY", timeout=30)  # after its initdead, not hearing a peer it can read
    assert_steady(rack, ("ACTIVE", "STANDBY"), 5 * HEARTBEATS_PER_DEADTIME)
    assert not state_events(rack, "bravo", "TAKEOVER")
    blocked = [e["data"] for e in rack.events("bravo") if e["kind"] == "takeover.blocked"]
    assert [b["code"] for b in blocked] == ["peer_incompatible"]
    for name, other in (("alpha", "generation 1 revision 0"), ("bravo", "generation 0 revision 1")):
        assert any(f"speaks heartbeat protocol {other}" in alarm and "cannot read" in alarm
                   for alarm in rack.alarms(name)), rack.alarms(name)
        assert [e["data"]["version"] for e in rack.events(name) if e["kind"] == "peer.incompatible"] == [other]
    rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=20)
    assert "silent on every link" in state_events(rack, "bravo", "TAKEOVER")[-1]["data"]["reason"]


def test_a_standby_of_a_newer_revision_pairs_normally(rack: TwoNodeRack) -> None:
    restart_as_release(rack, "bravo", "0x02")
    rack.wait_until("alpha", lambda brief: brief["peer_alive"], what="alpha to hear bravo")
    rack.wait_state("bravo", "STANDBY")
    assert rack.status("bravo")["protocol"] == "generation 0 revision 2"
    assert peer_protocol(rack, "alpha") is None and peer_protocol(rack, "bravo") is None
    assert_steady(rack, ("ACTIVE", "STANDBY"), 3 * HEARTBEATS_PER_DEADTIME)
    rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=20)
