"""The simulated LAN: which simulated box holds which address, seen by every process of a rack.

A real box keeps its addresses on its interfaces when its daemon dies; a
daemon's in-memory record would not. So the simulator's network backend
(`sim.network.RecordingNetwork`) publishes every address it configures here,
one file per (address, box), and withdraws it when it removes it. Another
process for the same box (`tandem release` after a crash, the daemon
restarted) finds what the box still holds; the peer's duplicate-address
probe finds who answers for an address; tests and the lab read who holds
what, including two holders at once.

Duplicate-address probes see what a real LAN would: a holder answers, a
box probing for the same address at the same time is a contender, and a box
whose LAN cable is pulled (`unplug`) neither hears nor is heard, and a hung
switch (`hang`) forwards nothing while every link stays up. Other hosts
(a gateway that answers for its address) are published like boxes.

The rack names the LAN's folder and the box in the environment of the
processes it starts (`LAN_ENV`, `HOST_ENV`); a process without them keeps its
addresses to itself, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from firmware.core.journal import write_atomically

LAN_ENV = "TANDEM_SIM_LAN"    # the folder of the simulated LAN
HOST_ENV = "TANDEM_SIM_HOST"  # the simulated box this process runs on


def host_mac(host: str) -> str:
    """A stable, locally administered MAC address for a simulated box."""
    digest = hashlib.sha256(host.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


class SimulatedLan:
    """The addresses every simulated box on one LAN holds (a folder of small files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.held = self.folder / "held"            # <address>@<host>: a JSON record per held address
        self.probing = self.folder / "probing"      # <address>@<host>: until when (epoch seconds) it probes
        self.unplugged = self.folder / "unplugged"  # <host>: that box's LAN cable is pulled
        for sub in (self.held, self.probing, self.unplugged):
            sub.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_environment(cls) -> tuple["SimulatedLan", str] | None:
        """The LAN and box named by the environment, or None outside a rack."""
        folder, host = os.environ.get(LAN_ENV), os.environ.get(HOST_ENV)
        if not folder or not host:
            return None
        return cls(Path(folder)), host

    def _file(self, address: str, host: str) -> Path:
        return self.held / f"{address.replace('/', '_')}@{host}"

    def publish(self, host: str, interface: str, address: str) -> None:
        """`host` configured `address` (with its prefix) on `interface`."""
        record = {"host": host, "mac": host_mac(host), "interface": interface, "address": address}
        write_atomically(self._file(address, host), json.dumps(record).encode())

    def withdraw(self, host: str, address: str) -> None:
        """`host` removed `address`."""
        self._file(address, host).unlink(missing_ok=True)

    def records(self) -> list[dict[str, str]]:
        """Every (address, holder) on the LAN."""
        found = []
        for path in sorted(self.held.iterdir()):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # withdrawn while being read
                continue
        return found

    def holders(self, ip: str) -> list[dict[str, str]]:
        """Who answers for the bare address `ip` (no prefix): one record per holding box."""
        return [r for r in self.records() if r["address"].split("/")[0] == ip]

    def held_by(self, host: str) -> list[dict[str, str]]:
        """What `host` holds."""
        return [r for r in self.records() if r["host"] == host]

    # ------------------------------------------------------------------ the cable and probes

    def unplug(self, host: str) -> None:
        """Pull `host`'s LAN cable: it hears nobody and nobody hears it, but it keeps its addresses."""
        (self.unplugged / host).touch()

    def plug(self, host: str) -> None:
        """Put `host`'s LAN cable back."""
        (self.unplugged / host).unlink(missing_ok=True)

    def connected(self, host: str) -> bool:
        """Whether `host`'s LAN cable is in."""
        return not (self.unplugged / host).exists()

    def hang(self, hung: bool = True) -> None:
        """A hung switch (or `hung=False`: it works again): links stay up, nothing is forwarded."""
        flag = self.folder / "hung"
        flag.touch() if hung else flag.unlink(missing_ok=True)

    def forwarding(self, host: str) -> bool:
        """Whether `host` hears and is heard: its cable is in and the switch forwards."""
        return self.connected(host) and not (self.folder / "hung").exists()

    def holder(self, host: str, ip: str) -> str | None:
        """The MAC of a box other than `host` that answers `host`'s probe for the bare address `ip`, or None."""
        if not self.forwarding(host):
            return None
        for record in self.holders(ip):
            if record["host"] != host and self.connected(record["host"]):
                return record["mac"]
        return None

    def start_probe(self, host: str, ip: str, seconds: float) -> None:
        """`host` probes for `ip` during the next `seconds` (others probing meanwhile see it contend)."""
        write_atomically(self.probing / f"{ip}@{host}", str(time.time() + seconds).encode())

    def contender(self, host: str, ip: str, since: float) -> str | None:
        """The MAC of another connected box that probed for `ip` after `since` (epoch seconds), or None."""
        if not self.forwarding(host):
            return None
        for path in self.probing.glob(f"{ip}@*"):
            other = path.name.partition("@")[2]
            try:
                until = float(path.read_text())
            except (OSError, ValueError):  # rewritten while being read
                continue
            if other != host and until >= since and self.connected(other):
                return host_mac(other)
        return None
