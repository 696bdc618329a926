"""The shared IP really moves: two daemons in network namespaces on a bridge (root only).

A third namespace plays the switch: it captures the gratuitous ARPs and the
unsolicited neighbour advertisements the new ACTIVE node sends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import wait_for
from sim.rack import TwoNodeRack

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

SHARED_V4 = "192.0.2.100/24"
SHARED_V6 = "2001:db8::100/64"


@pytest.fixture
def rack(racks: Callable[..., TwoNodeRack]) -> TwoNodeRack:
    return racks(netns=True, shared_ips=[
        {"address": SHARED_V4, "interface": "eth0", "route_source": True},
        {"address": SHARED_V6, "interface": "eth0"},
    ])


def holders(rack, address: str) -> list[str]:
    return [name for name in ("alpha", "bravo") if address in rack.addresses(name)]


def prefsrc(rack, name: str) -> str | None:
    from sim.netns import ip_json

    routes = ip_json(rack.namespace(name), "route", "show", "dev", "eth0")
    return next((r.get("prefsrc") for r in routes if r["dst"] == "192.0.2.0/24"), None)


def test_sigkill_moves_the_address_and_the_switch_sees_the_announcements(rack) -> None:
    bravo_mac = rack.lab.nodes[1].mac
    assert holders(rack, SHARED_V4) == ["alpha"] and holders(rack, SHARED_V6) == ["alpha"]
    sniffer = rack.lab.sniffer()
    killed = rack.kill("alpha")
    rack.wait_state("bravo", "ACTIVE", timeout=10)
    garp = sniffer.wait_for(kind="garp", ip="192.0.2.100", since=killed, timeout=5)
    assert garp["mac"] == bravo_mac
    na = sniffer.wait_for(kind="na", ip="2001:db8::100", since=killed, timeout=5)
    assert na["mac"] == bravo_mac and na["override"] and not na["solicited"] and not na["router"]
    assert na["checksum_ok"]
    # The whole burst (5 x 200 ms by default) goes out.
    wait_for(lambda: len(sniffer.find(kind="garp", ip="192.0.2.100", since=killed)) >= 5, 10,
             what="the whole burst of five gratuitous ARPs")
    assert prefsrc(rack, "bravo") == "192.0.2.100"
    # systemd restarts the killed daemon: it releases what the crash left and joins as STANDBY.
    rack.start_node("alpha")
    rack.wait_state("alpha", "STANDBY", timeout=30)
    assert holders(rack, SHARED_V4) == ["bravo"] and holders(rack, SHARED_V6) == ["bravo"]


def test_demote_moves_the_address_back_and_restores_the_route_source(rack) -> None:
    assert prefsrc(rack, "alpha") == "192.0.2.100"
    result = rack.cli("alpha", "demote")
    assert result.returncode == 0, result.stderr
    assert holders(rack, SHARED_V4) == ["bravo"] and holders(rack, SHARED_V6) == ["bravo"]
    assert prefsrc(rack, "alpha") == "192.0.2.10"  # alpha's own address again
    assert prefsrc(rack, "bravo") == "192.0.2.100"


def test_missing_interface_is_a_startup_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    rack = TwoNodeRack(tmp_path, netns=True, shared_ips=[{"address": SHARED_V4, "interface": "eth9"}])
    try:
        rack.write_configs()
        result = subprocess.run(["ip", "netns", "exec", rack.namespace("alpha"), sys.executable, "-m",
                                 "firmware.cli", "--config", str(rack.config_path("alpha")), "run"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 78
        assert "eth9 does not exist" in result.stderr
    finally:
        rack.stop()
