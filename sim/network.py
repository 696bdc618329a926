"""A network backend for the simulator: keeps addresses in memory and records every call.

Chosen by the sim board profile (`network = "sim.network:RecordingNetwork"`), so
the shared-IP action runs unchanged without root and without touching the
host. The record is exposed through the daemon's status (`shared_ips`) and to
tests as `calls`.

Inside a rack the addresses live on the simulated LAN (`sim.lan`), as a real
box keeps them on its interfaces when its daemon dies: a new process for the
same box starts with what the box still holds, and the duplicate-address
probe answers from what the other boxes hold.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from firmware.core.actions.network import IPAddress, IPInterface, NetworkError, ProbeAnswer
from sim.lan import SimulatedLan

TAKEN_BY_MAC = "02:00:00:00:00:99"  # the "other host" that answers for addresses in `taken`


class RecordingNetwork:
    """NetworkBackend that remembers addresses and logs announcements instead of sending them."""

    def __init__(self, interfaces: tuple[str, ...] = ("eth0", "eth1")) -> None:
        self.interfaces = set(interfaces)
        self.addresses: dict[str, set[str]] = {name: set() for name in interfaces}
        self.route_sources: dict[tuple[str, str], str] = {}
        self.calls: list[dict[str, Any]] = []
        self.taken: set[str] = set()  # addresses "another host" answers for (duplicate probes)
        self._lock = threading.Lock()
        self.lan = SimulatedLan.from_environment()
        if self.lan is not None:
            lan, host = self.lan
            for record in lan.held_by(host):
                self.addresses.setdefault(record["interface"], set()).add(record["address"])

    def _record(self, op: str, **data: Any) -> None:
        with self._lock:
            self.calls.append({"op": op, "time": time.time(), **{k: str(v) for k, v in data.items()}})
            del self.calls[:-1000]

    def check(self, interface: str) -> None:
        """Fail like the real backend would for an unknown interface."""
        base = interface.split(".")[0]
        if base not in self.interfaces:
            raise NetworkError(f"interface {interface} does not exist (simulated interfaces: "
                               f"{', '.join(sorted(self.interfaces))})")

    def ensure_vlan(self, parent: str, vlan_id: int) -> str:
        """Pretend-create the VLAN interface."""
        self.check(parent)
        name = f"{parent}.{vlan_id}"
        self.addresses.setdefault(name, set())
        self._record("vlan", interface=name)
        return name

    def has_address(self, interface: str, address: IPInterface) -> bool:
        """Whether the address is configured."""
        return str(address) in self.addresses.get(interface, set())

    def add_address(self, interface: str, address: IPInterface) -> None:
        """Configure the address."""
        self.check(interface)
        self.addresses.setdefault(interface, set()).add(str(address))
        if self.lan is not None:
            lan, host = self.lan
            lan.publish(host, interface, str(address))
        self._record("add", interface=interface, address=address)

    def remove_address(self, interface: str, address: IPInterface) -> None:
        """Remove the address."""
        self.addresses.get(interface, set()).discard(str(address))
        if self.lan is not None:
            lan, host = self.lan
            lan.withdraw(host, str(address))
        self._record("remove", interface=interface, address=address)

    def link_up(self, interface: str) -> bool:
        """Up unless the box's cable is pulled from the simulated LAN (a known interface is always up alone)."""
        self._record("link_up", interface=interface)
        return self.lan is None or self.lan[0].connected(self.lan[1])

    def probe(self, interface: str, address: IPAddress, timeout: float) -> ProbeAnswer:
        """Simulated duplicate probe: answered by another box on the LAN that holds the address (or
        probing for it at the same time), or by "another host" for addresses marked as taken.

        Timed like the real one: a holder answers at once, a free address
        takes the whole timeout.
        """
        self._record("probe", interface=interface, address=address)
        ip = str(address)
        if ip in self.taken:
            return ProbeAnswer(TAKEN_BY_MAC, None)
        if self.lan is None:
            time.sleep(timeout)
            return ProbeAnswer(None, None)
        lan, host = self.lan
        started = time.time()
        holder = lan.holder(host, ip)
        if holder is None:
            lan.start_probe(host, ip, timeout)
            time.sleep(timeout)
            holder = lan.holder(host, ip)
        return ProbeAnswer(holder, lan.contender(host, ip, started))

    def announce(self, interface: str, address: IPAddress, router: bool = False) -> None:
        """Record a gratuitous ARP / unsolicited NA."""
        self._record("garp" if address.version == 4 else "na", interface=interface, address=address, router=router)

    def set_route_source(self, interface: str, address: IPInterface) -> None:
        """Record the preferred source of the connected route."""
        self.route_sources[(interface, str(address.network))] = str(address.ip)
        self._record("route_source", interface=interface, address=address)

    def restore_route_source(self, interface: str, address: IPInterface) -> None:
        """Forget the preferred source."""
        self.route_sources.pop((interface, str(address.network)), None)
        self._record("route_restore", interface=interface, address=address)
