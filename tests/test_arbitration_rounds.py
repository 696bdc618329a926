"""The arbiter's rounds, without a LAN: how probe answers become one verdict, and what a round asks first.

`verdict_of` turns each probe's answer into the round's `LanProbe`; a
`LanArbiter` round reads the physical ports' carrier before it probes. A
fake network backend answers, and records what it was asked.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from firmware.config.node import SharedIpConfig
from firmware.core.actions.network import ProbeAnswer
from firmware.core.actions.sharedip import SharedIpAction
from firmware.core.arbitration import LanArbiter, verdict_of
from firmware.core.cluster import LanProbe, LanVerdict

HOLDER, OTHER = "52:54:00:00:00:01", "52:54:00:00:00:02"
NOBODY = ProbeAnswer(None, None)
ANSWERED = ProbeAnswer(HOLDER, None)


def test_a_holder_makes_the_round_held_whatever_else_answered() -> None:
    probe = verdict_of(1.0, [("192.0.2.10 on eth0", ANSWERED)], [("192.0.2.1 on eth0", "send failed")])
    assert probe.verdict is LanVerdict.HELD and probe.holder == HOLDER and probe.started_at == 1.0


def test_a_failed_probe_is_this_nodes_own_failure_a_silent_control_is_not() -> None:
    failed = verdict_of(1.0, [("192.0.2.10 on eth0", "socket: Operation not permitted")], [("192.0.2.1", ANSWERED)])
    assert failed.verdict is LanVerdict.INCONCLUSIVE and failed.local_failure
    silent = verdict_of(1.0, [("192.0.2.10 on eth0", NOBODY)], [("192.0.2.1 on eth0", NOBODY)])
    assert silent.verdict is LanVerdict.INCONCLUSIVE and not silent.local_failure
    assert "did not answer" in silent.detail


def test_free_contended_and_what_the_peers_own_address_said() -> None:
    free = verdict_of(1.0, [("a", NOBODY)], [("c", ANSWERED)], ("192.0.2.12 on eth0", ANSWERED))
    assert free.verdict is LanVerdict.FREE and free.peer_seen is True
    unseen = verdict_of(1.0, [("a", NOBODY)], [("c", ANSWERED)], ("192.0.2.12 on eth0", NOBODY))
    assert unseen.verdict is LanVerdict.FREE and unseen.peer_seen is False
    failed = verdict_of(1.0, [("a", NOBODY)], [("c", ANSWERED)], ("192.0.2.12 on eth0", "timed out"))
    assert failed.peer_seen is None  # a failed probe of the peer says nothing about it
    contended = verdict_of(1.0, [("a", ProbeAnswer(None, OTHER))], [("c", ANSWERED)])
    assert contended.verdict is LanVerdict.CONTENDED and contended.holder == OTHER
    assert verdict_of(1.0, [("a", NOBODY)], [("c", ANSWERED)]).peer_seen is None  # not asked


class FakeNetwork:
    """Answers probes from a table; a port list says which physical ports have a carrier."""

    def __init__(self, up: set[str], answers: dict[str, ProbeAnswer]) -> None:
        self.up, self.answers = up, answers
        self.asked: list[tuple[str, Any]] = []

    def link_up(self, interface: str) -> bool:
        self.asked.append(("link_up", interface))
        return interface in self.up

    def ensure_vlan(self, parent: str, vlan_id: int) -> str:
        self.asked.append(("ensure_vlan", f"{parent}.{vlan_id}"))
        return f"{parent}.{vlan_id}"

    def probe(self, interface: str, address: Any, timeout: float) -> ProbeAnswer:
        self.asked.append(("probe", str(address)))
        return self.answers.get(str(address), NOBODY)


def _round(network: FakeNetwork, vlan: int | None = None, peer: str = "") -> LanProbe:
    action = SharedIpAction(SharedIpConfig(address="192.0.2.10/24", interface="eth0", vlan=vlan), network)
    arbiter = LanArbiter([action], ["192.0.2.1"], 0.01, lambda probe: None, peer_address=peer)

    async def run() -> LanProbe:
        try:
            return await arbiter.run_round(0.0)
        finally:
            arbiter.close()
    return asyncio.run(run())


def test_without_a_carrier_the_round_is_link_down_and_probes_nothing() -> None:
    network = FakeNetwork(up=set(), answers={})
    probe = _round(network)
    assert probe.verdict is LanVerdict.LINK_DOWN and "eth0 has no carrier" in probe.detail
    assert [kind for kind, _ in network.asked] == ["link_up"]


def test_the_carrier_is_read_on_the_physical_port_under_a_vlan() -> None:
    """The VLAN interface may not exist before the first claim: its absence is not a pulled cable."""
    network = FakeNetwork(up={"eth0"}, answers={"192.0.2.1": ANSWERED, "192.0.2.12": ANSWERED})
    probe = _round(network, vlan=100, peer="192.0.2.12")
    assert ("link_up", "eth0") in network.asked and ("ensure_vlan", "eth0.100") in network.asked
    assert probe.verdict is LanVerdict.FREE and probe.peer_seen is True
    assert {str(ipaddress.ip_address(a)) for k, a in network.asked if k == "probe"} == \
        {"192.0.2.10", "192.0.2.1", "192.0.2.12"}
