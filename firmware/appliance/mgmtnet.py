"""The box's own network ports (management LAN, heartbeat port), kept on the data partition, applied by networkd.

An integrator sets them with `tandem network set` (or undoes the last change at
the front panel); they are stored as one JSON file and rendered into
systemd-networkd files, both on the data partition (the image links
``/etc/tandem`` and ``/etc/systemd/network`` there), so they survive an update
and a factory reset removes them:

* ``/etc/tandem/network.json``: ``{"version": 1, "ports": {"lan0": {"mode":
  "static", "address": "192.0.2.1/24", "gateway": "192.0.2.254", "dns":
  ["192.0.2.53"], "vlan": null}}}``;
* ``/etc/tandem/network.json.previous``: the settings before the last change,
  so one step can be undone without a laptop (undoing twice redoes);
* ``/etc/systemd/network/10-tandem-<port>.network`` (plus a ``.netdev`` and a
  ``.network`` for ``<port>.<vlan>`` with a VLAN). They sort before the image's
  ``90-tandem-dhcp.network``, so a port Tandem was told about takes these and
  every other Ethernet port keeps DHCP.

Every rendered ``.network`` says ``KeepConfiguration=static``: networkd otherwise
drops addresses it did not configure when it reconfigures a port, and the
shared IP that Tandem holds on the ACTIVE box is one of them. Applying runs
``networkctl reload`` and ``networkctl reconfigure`` for the ports concerned
(as the daemon's user this needs the polkit rule the image ships).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from firmware import paths
from firmware.core.journal import write_atomically
from firmware.errors import TandemError

DEFAULT_SETTINGS = paths.ETC_DIR / "network.json"
DEFAULT_NETWORKD_DIR = Path("/etc/systemd/network")
FILE_PREFIX = "10-tandem-"
MAX_DNS = 3
_PORT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}")  # a Linux interface name (IFNAMSIZ - 1)
_HEADER = "# Written by `tandem network` from {settings}; change it with `tandem network`, not here.\n"

IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkSettingError(TandemError):
    """A port setting that cannot be used, or settings that cannot be read, written or applied."""


@dataclass(frozen=True)
class PortSettings:
    """How one port gets its address: DHCP, or a static address with gateway and DNS; optionally on a VLAN."""

    port: str
    mode: Literal["dhcp", "static"] = "dhcp"
    address: IpInterface | None = None
    gateway: IpAddress | None = None
    dns: tuple[IpAddress, ...] = field(default_factory=tuple)
    vlan: int | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise NetworkSettingError(f"{self.port}: {problem}")

    def _problem(self) -> str | None:
        if not _PORT_NAME.fullmatch(self.port) or self.port in (".", ".."):
            return "not an interface name (1-15 letters, digits, '-', '_', '.')"
        if self.vlan is not None and not 1 <= self.vlan <= 4094:
            return f"VLAN id {self.vlan} is not 1-4094"
        if self.vlan is not None and len(self.interface) > 15:
            return f"the VLAN interface name {self.interface!r} is longer than 15 characters"
        if len(self.dns) > MAX_DNS:
            return f"at most {MAX_DNS} DNS servers"
        if self.mode == "dhcp":
            if self.address is not None or self.gateway is not None:
                return "DHCP gives the address and gateway: give neither with --dhcp"
            return None
        if self.address is None:
            return "a static address needs --address ADDRESS/PREFIX"
        network = self.address.network
        if self.address.version == 4 and network.prefixlen < 31:
            if self.address.ip == network.network_address:
                return f"{self.address} is the network's own address, not a host's"
            if self.address.ip == network.broadcast_address:
                return f"{self.address} is the network's broadcast address"
        if self.gateway is not None:
            if self.gateway.version != self.address.version:
                return f"gateway {self.gateway} is not IPv{self.address.version} like the address"
            if self.gateway == self.address.ip:
                return f"gateway {self.gateway} is this box's own address"
            if self.gateway not in network and not self.gateway.is_link_local:
                return f"gateway {self.gateway} is not in {network}, so it cannot be reached"
        return None

    @property
    def interface(self) -> str:
        """The interface that carries the address: the port, or ``port.vlan`` on a VLAN."""
        return f"{self.port}.{self.vlan}" if self.vlan is not None else self.port

    @classmethod
    def parse(cls, port: str, dhcp: bool, address: str | None = None, gateway: str | None = None,
              dns: Sequence[str] = (), vlan: int | None = None) -> PortSettings:
        """Settings from text (the CLI's arguments, the JSON file); NetworkSettingError names what is wrong."""
        if dhcp == (address is not None):
            raise NetworkSettingError(f"{port}: give either --dhcp or --address ADDRESS/PREFIX")
        try:
            if address is not None and "/" not in address:
                raise ValueError(f"{address!r} has no prefix length (e.g. 192.0.2.10/24)")
            interface = ipaddress.ip_interface(address) if address is not None else None
            router = ipaddress.ip_address(gateway) if gateway else None
            servers = tuple(ipaddress.ip_address(server) for server in dns)
        except ValueError as exc:
            raise NetworkSettingError(f"{port}: {exc}") from None
        return cls(port, "dhcp" if dhcp else "static", interface, router, servers, vlan)

    def to_json(self) -> dict[str, Any]:
        """The settings as stored in network.json (without the port, which is the key)."""
        return {"mode": self.mode, "address": str(self.address) if self.address else None,
                "gateway": str(self.gateway) if self.gateway else None, "dns": [str(s) for s in self.dns],
                "vlan": self.vlan}

    @classmethod
    def from_json(cls, port: str, data: Mapping[str, Any]) -> PortSettings:
        """Settings as stored in network.json; NetworkSettingError if they are not valid."""
        if not isinstance(data, Mapping) or data.get("mode") not in ("dhcp", "static"):
            raise NetworkSettingError(f"{port}: mode is not 'dhcp' or 'static'")
        dns = data.get("dns") or []
        vlan = data.get("vlan")
        if not isinstance(dns, list) or not all(isinstance(s, str) for s in dns) or \
                not (vlan is None or (isinstance(vlan, int) and not isinstance(vlan, bool))):
            raise NetworkSettingError(f"{port}: dns must be a list of addresses and vlan a number")
        return cls.parse(port, data["mode"] == "dhcp", data.get("address"), data.get("gateway"), dns, vlan)

    def describe(self) -> str:
        """One line for `tandem network show` and the panel: ``lan0 static 192.0.2.1/24 gw 192.0.2.254``."""
        words = [self.interface, self.mode.upper() if self.mode == "dhcp" else str(self.address)]
        if self.gateway:
            words.append(f"gw {self.gateway}")
        if self.dns:
            words.append("dns " + ",".join(str(s) for s in self.dns))
        return " ".join(words)


Ports = dict[str, PortSettings]


def render(ports: Mapping[str, PortSettings], settings_path: Path = DEFAULT_SETTINGS) -> dict[str, str]:
    """The networkd files for these ports: file name → text."""
    header = _HEADER.format(settings=settings_path)
    files: dict[str, str] = {}
    for name in sorted(ports):
        port = ports[name]
        if port.vlan is not None:
            files[f"{FILE_PREFIX}{port.port}.network"] = header + (
                f"[Match]\nName={port.port}\n\n[Network]\nVLAN={port.interface}\nLinkLocalAddressing=no\n"
                "KeepConfiguration=static\n")
            files[f"{FILE_PREFIX}{port.interface}.netdev"] = header + (
                f"[NetDev]\nName={port.interface}\nKind=vlan\n\n[VLAN]\nId={port.vlan}\n")
        lines = [f"[Match]\nName={port.interface}\n", "[Network]"]
        if port.mode == "dhcp":
            lines += ["DHCP=yes", "IPv6AcceptRA=yes"]
        else:
            lines += [f"Address={port.address}", "IPv6AcceptRA=no"]
            if port.gateway:
                lines.append(f"Gateway={port.gateway}")
        lines += [f"DNS={server}" for server in port.dns]
        lines += ["LinkLocalAddressing=ipv6", "KeepConfiguration=static"]
        files[f"{FILE_PREFIX}{port.interface}.network"] = header + "\n".join(lines) + "\n"
    return files


@dataclass
class NetworkStore:
    """The settings file (with one step of undo) and the networkd directory it is rendered into."""

    settings_path: Path = DEFAULT_SETTINGS
    networkd_dir: Path = DEFAULT_NETWORKD_DIR

    @property
    def previous_path(self) -> Path:
        """Where the settings before the last change are kept."""
        return self.settings_path.with_name(self.settings_path.name + ".previous")

    def load(self, path: Path | None = None) -> Ports:
        """The stored settings (none stored: no port is configured, every port keeps the image's DHCP)."""
        path = path or self.settings_path
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise NetworkSettingError(f"{path}: cannot be read ({exc})") from None
        ports = data.get("ports") if isinstance(data, dict) else None
        if not isinstance(ports, dict):
            raise NetworkSettingError(f"{path}: ports: missing or not a table")
        try:
            return {name: PortSettings.from_json(name, value) for name, value in ports.items()}
        except NetworkSettingError as exc:
            raise NetworkSettingError(f"{path}: ports: {exc}") from None

    def can_undo(self) -> bool:
        """Whether a previous setting is kept to go back to."""
        return self.previous_path.exists()

    def save(self, ports: Mapping[str, PortSettings]) -> None:
        """Keep the current settings as the previous ones, then store and render `ports` (each file atomically)."""
        current = self.load()
        self._write(self.previous_path, current)
        self._write(self.settings_path, ports)
        self.render_files(ports)

    def undo(self) -> Ports:
        """Go back to the settings before the last change (the current ones become the previous); those settings."""
        if not self.can_undo():
            raise NetworkSettingError(f"nothing to undo: {self.previous_path} does not exist")
        previous, current = self.load(self.previous_path), self.load()
        self._write(self.settings_path, previous)
        self._write(self.previous_path, current)
        self.render_files(previous)
        return previous

    def render_files(self, ports: Mapping[str, PortSettings]) -> list[str]:
        """Write the networkd files for `ports` and remove Tandem's files for ports no longer set; names touched."""
        files = render(ports, self.settings_path)
        try:
            self.networkd_dir.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                write_atomically(self.networkd_dir / name, text.encode())
                # networkd reads them as its own user: readable by all, whatever the writer's umask
                # (the daemon's unit has UMask=0027).
                os.chmod(self.networkd_dir / name, 0o644)
            stale = [p for p in self.networkd_dir.glob(f"{FILE_PREFIX}*") if p.name not in files]
            for path in stale:
                path.unlink()
        except OSError as exc:
            raise NetworkSettingError(f"{self.networkd_dir}: cannot write the networkd files ({exc})") from None
        return sorted([*files, *(p.name for p in stale)])

    def _write(self, path: Path, ports: Mapping[str, PortSettings]) -> None:
        data = {"version": 1, "ports": {name: ports[name].to_json() for name in sorted(ports)}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, (json.dumps(data, indent=1) + "\n").encode())
        except OSError as exc:
            raise NetworkSettingError(f"{path}: cannot be written ({exc})") from None


def ethernet_ports(net_dir: Path = Path("/sys/class/net")) -> list[str]:
    """The box's physical Ethernet ports (type 1 with a device behind it: no bridge, VLAN or tap), sorted."""
    ports = []
    for port in sorted(net_dir.iterdir()) if net_dir.is_dir() else []:
        try:
            if (port / "type").read_text().strip() == "1" and (port / "device").exists():
                ports.append(port.name)
        except OSError:
            continue
    return ports


def apply(ports: Sequence[str], gone_vlans: Sequence[str] = (), networkctl: str = "networkctl",
          timeout: float = 30.0) -> None:
    """Have systemd-networkd read its files again, remove `gone_vlans` and reconfigure `ports`.

    NetworkSettingError if networkctl is missing or refuses (the files stay written).
    """
    commands = [[networkctl, "reload"]]
    if gone_vlans:
        commands.append([networkctl, "delete", *gone_vlans])
    if ports:
        commands.append([networkctl, "reconfigure", *ports])
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise NetworkSettingError(f"{networkctl} not found: the settings are saved, not applied "
                                      "(is systemd-networkd this box's network manager?)") from None
        except subprocess.TimeoutExpired:
            raise NetworkSettingError(f"`{' '.join(command)}` did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            raise NetworkSettingError(f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()}")


def changed_ports(before: Mapping[str, PortSettings], after: Mapping[str, PortSettings]) -> list[str]:
    """The physical ports whose settings differ (each reconfigured after a change)."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def gone_vlans(before: Mapping[str, PortSettings], after: Mapping[str, PortSettings]) -> list[str]:
    """VLAN interfaces that `before` made and `after` no longer has (networkd leaves them: delete them)."""
    wanted = {port.interface for port in after.values()}
    return sorted(port.interface for port in before.values() if port.vlan is not None and port.interface not in wanted)


def change(store: NetworkStore, ports: Mapping[str, PortSettings], networkctl: str = "networkctl") -> list[str]:
    """Store `ports` (the current settings become the undo step) and apply them; the ports reconfigured."""
    before = store.load()
    store.save(ports)
    touched = changed_ports(before, ports)
    _apply_saved(store, touched, gone_vlans(before, ports), networkctl)
    return touched


def undo(store: NetworkStore, networkctl: str = "networkctl") -> tuple[Ports, list[str]]:
    """Go back one change and apply it; the settings now in force and the ports reconfigured."""
    before = store.load()
    after = store.undo()
    touched = changed_ports(before, after)
    _apply_saved(store, touched, gone_vlans(before, after), networkctl)
    return after, touched


def _apply_saved(store: NetworkStore, ports: Sequence[str], vlans: Sequence[str], networkctl: str) -> None:
    try:
        apply(ports, vlans, networkctl)
    except NetworkSettingError as exc:
        raise NetworkSettingError(f"saved in {store.settings_path} but not applied: {exc}") from None
