"""The appliance's board extension: what a box flashed from the image offers beyond the cluster.

Board profiles of appliances (``board_profiles/qemu-x86.toml``, real x86 boxes) name :func:`install`
in ``extensions``; the composition root calls it with the composed node. It adds:

* the status key ``mgmt_network``: this box's own ports as `tandem network` set them (``ports``,
  one line each) and whether a change can be undone (``undo``); the panel's Network page shows it;
* the journaled command ``network-set`` (the panel's "Network set": one port by DHCP or a static
  address and gateway) and ``network-undo``: go back to the port settings before the last change,
  the panel's way to recover from a wrong setting without a laptop. networkctl runs on a worker
  thread, so a slow networkd never holds up the event loop (and the heartbeats);
* the status key ``factory_reset`` and the journaled command ``factory-reset`` (the panel's, behind
  its PIN and hold): the privileged helper runs `tandem factory-reset --yes`, which needs root,
  and the box reboots (systemd stops Tandem first: an ACTIVE box hands the calls over).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from firmware.appliance import helper, mgmtnet
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, Params, SourceParams
from firmware.core.journal import Journal
from firmware.node import Node


class ManagementNetworkView:
    """The stored port settings as the status shows them (the file is read again only when it changed)."""

    def __init__(self, store: mgmtnet.NetworkStore,
                 ethernet_ports: Callable[[], list[str]] = mgmtnet.ethernet_ports) -> None:
        self.store = store
        self.ethernet_ports = ethernet_ports
        self._seen: tuple[float, float] | None = None
        self._section: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        """``{"mgmt_network": {"ports", "settings", "undo", "choices"}}`` (``error`` too if the file is damaged).

        ``choices``: the ports the panel's "Network set" offers (the box's Ethernet ports and any set).
        """
        stamp = (_mtime(self.store.settings_path), _mtime(self.store.previous_path))
        if stamp != self._seen:
            self._seen = stamp
            try:
                ports = self.store.load()
                self._section = {"ports": [ports[name].describe() for name in sorted(ports)],
                                 "settings": {name: ports[name].to_json() for name in sorted(ports)},
                                 "undo": self.store.can_undo()}
            except mgmtnet.NetworkSettingError as exc:
                self._section = {"ports": [], "settings": {}, "undo": self.store.can_undo(), "error": str(exc)}
        # Read each time (a few sysfs entries): a port plugged in later is offered at once.
        choices = sorted(set(self.ethernet_ports()) | set(self._section["settings"]))
        return {"mgmt_network": {**self._section, "choices": choices}}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def install(node: Node, store: mgmtnet.NetworkStore | None = None, networkctl: str = "networkctl",
            helper_socket: Path = helper.SOCKET,
            ethernet_ports: Callable[[], list[str]] = mgmtnet.ethernet_ports) -> None:
    """Register the management network's and the factory reset's status and commands on `node`'s daemon."""
    register_network_commands(node.daemon.endpoints, node.daemon.journal, store or mgmtnet.NetworkStore(),
                              networkctl, ethernet_ports)
    register_factory_reset(node.daemon.endpoints, node.daemon.journal, helper_socket)


def register_factory_reset(endpoints: Endpoints, journal: Journal, helper_socket: Path = helper.SOCKET) -> None:
    """``factory_reset`` in the status and the journaled ``factory-reset`` command (through the helper)."""
    endpoints.add_status(lambda: {"factory_reset": True})

    async def factory_reset(request: dict[str, Any]) -> str:
        try:
            reply = await asyncio.to_thread(helper.call, "factory-reset", ["factory-reset", "--yes"], helper_socket)
        except helper.HelperError as exc:
            raise ControlError(f"factory-reset: {exc}") from None
        if reply["returncode"] != 0:
            raise ControlError(f"factory-reset: {(reply['stderr'] or reply['stdout']).strip()}")
        journal.record("factory-reset", {"source": request["source"]})
        return "wiping the data partition at the reboot; the box comes back unpaired"

    endpoints.add_command("factory-reset", factory_reset, SourceParams, journaled=True)


class NetworkSetParams(Params):
    """``network-set``: one port by DHCP, or a static IPv4 address with an optional gateway (the panel's)."""

    source: Annotated[str, Field(min_length=1, max_length=64)] = "cli"
    port: Annotated[str, Field(min_length=1, max_length=15)]
    dhcp: bool = False
    address: Annotated[str, Field(max_length=64)] | None = None
    gateway: Annotated[str, Field(max_length=64)] | None = None


def register_network_commands(endpoints: Endpoints, journal: Journal, store: mgmtnet.NetworkStore,
                              networkctl: str = "networkctl",
                              ethernet_ports: Callable[[], list[str]] = mgmtnet.ethernet_ports) -> None:
    """The ``mgmt_network`` status key and the journaled ``network-set`` and ``network-undo`` commands.

    The daemon's (through the appliance extension) and an unpaired box's (`tandem setup`).
    """
    view = ManagementNetworkView(store, ethernet_ports)
    endpoints.add_status(view.status)

    async def network_set(request: dict[str, Any]) -> str:
        try:
            ports = store.load()
            kept = ports.get(request["port"])  # DNS and VLAN are the CLI's; the panel keeps them
            ports[request["port"]] = mgmtnet.PortSettings.parse(
                request["port"], request["dhcp"], request["address"], request["gateway"],
                [str(server) for server in kept.dns] if kept else (), kept.vlan if kept else None)
            await asyncio.to_thread(mgmtnet.change, store, ports, networkctl)
        except mgmtnet.NetworkSettingError as exc:
            raise ControlError(f"network-set: {exc}") from None
        described = ports[request["port"]].describe()
        journal.record("network.changed", {"source": request["source"], "how": "set", "ports": [described]})
        return f"{described}; Network undo goes back"

    endpoints.add_command("network-set", network_set, NetworkSetParams, journaled=True)

    async def network_undo(request: dict[str, Any]) -> str:
        try:
            ports, _ = await asyncio.to_thread(mgmtnet.undo, store, networkctl)
        except mgmtnet.NetworkSettingError as exc:
            raise ControlError(f"network-undo: {exc}") from None
        journal.record("network.changed", {"source": request["source"], "how": "undo",
                                           "ports": [p.describe() for p in ports.values()]})
        now = "; ".join(ports[name].describe() for name in sorted(ports)) or "DHCP on every port"
        return f"undone: {now}"

    endpoints.add_command("network-undo", network_undo, SourceParams, journaled=True)
