"""The network side of takeover: the interface every shared-IP backend implements.

The board profile names the backend by import path (key `network`):
`firmware.core.actions.netlink:NetlinkNetwork` on real hardware (pyroute2 and
raw ARP / ICMPv6 sockets), `sim.network:RecordingNetwork` in the simulator.
Every method is blocking and idempotent; the shared-IP action calls them from
a worker thread so the heartbeat loop never waits on netlink.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Protocol

from firmware.errors import TandemError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkError(TandemError):
    """A network operation that failed; the message says what and why, for the journal."""


class ProbeAnswer(NamedTuple):
    """What one duplicate-address probe found on the LAN (MAC addresses as text, e.g. 52:54:00:12:34:56)."""

    holder: str | None     # who answered for the address: it is in use
    contender: str | None  # who probed for the same address meanwhile (IPv4 only): about to claim it

    @property
    def in_use(self) -> bool:
        """Whether another host holds the address."""
        return self.holder is not None


class NetworkBackend(Protocol):
    """What the shared-IP action needs from the network."""

    def check(self, interface: str) -> None:
        """Raise NetworkError now (at daemon start) if `interface` cannot be managed: missing, no privilege."""

    def ensure_vlan(self, parent: str, vlan_id: int) -> str:
        """Create `<parent>.<vlan_id>` if missing, bring it up; return its name."""

    def has_address(self, interface: str, address: IPInterface) -> bool:
        """Whether `address` (with its prefix) is configured on `interface`."""

    def add_address(self, interface: str, address: IPInterface) -> None:
        """Add `address` to `interface` (no error if already there). IPv6 without DAD (nodad)."""

    def remove_address(self, interface: str, address: IPInterface) -> None:
        """Remove `address` from `interface` (no error if absent)."""

    def link_up(self, interface: str) -> bool:
        """Whether `interface` is up and has a carrier (its cable is in and the far end is up)."""

    def probe(self, interface: str, address: IPAddress, timeout: float) -> ProbeAnswer:
        """Duplicate-address probe: ARP probe (RFC 5227) or neighbour solicitation; who else holds (or probes
        for) `address`. Listens the whole `timeout` unless a holder answers first."""

    def announce(self, interface: str, address: IPAddress, router: bool = False) -> None:
        """One gratuitous ARP request (IPv4), or one unsolicited neighbour advertisement with the
        override flag (IPv6; router flag as given), sent from `interface`'s MAC address."""

    def set_route_source(self, interface: str, address: IPInterface) -> None:
        """Make the connected route of `address`'s subnet on `interface` prefer `address` as source."""

    def restore_route_source(self, interface: str, address: IPInterface) -> None:
        """Undo set_route_source: the connected route without the shared address as preferred source."""
