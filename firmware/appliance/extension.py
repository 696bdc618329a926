"""The appliance's board extension: what a box flashed from the image offers beyond the cluster.

Board profiles of appliances (``board_profiles/qemu-x86.toml``, real x86 boxes) name :func:`install`
in ``extensions``; the composition root calls it with the composed node. It adds:

* the status key ``mgmt_network``: this box's own ports as `tandem network` set them (``ports``,
  one line each) and whether a change can be undone (``undo``); the panel's Network page shows it;
* the journaled command ``network-undo``: go back to the port settings before the last change,
  the panel's way to recover from a wrong setting without a laptop. networkctl runs on a worker
  thread, so a slow networkd never holds up the event loop (and the heartbeats);
* the status key ``factory_reset`` and the journaled command ``factory-reset`` (the panel's, behind
  its PIN and hold): the privileged helper runs `tandem factory-reset --yes`, which needs root,
  and the box reboots (systemd stops Tandem first: an ACTIVE box hands the calls over).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from firmware.appliance import helper, mgmtnet
from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, SourceParams
from firmware.core.journal import Journal
from firmware.node import Node


class ManagementNetworkView:
    """The stored port settings as the status shows them, read again only when the file changed."""

    def __init__(self, store: mgmtnet.NetworkStore) -> None:
        self.store = store
        self._seen: tuple[float, float] | None = None
        self._section: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        """``{"mgmt_network": {"ports": [...], "undo": bool}}`` (or ``error`` if the file is damaged)."""
        stamp = (_mtime(self.store.settings_path), _mtime(self.store.previous_path))
        if stamp != self._seen:
            self._seen = stamp
            try:
                ports = self.store.load()
                self._section = {"ports": [ports[name].describe() for name in sorted(ports)],
                                 "undo": self.store.can_undo()}
            except mgmtnet.NetworkSettingError as exc:
                self._section = {"ports": [], "undo": self.store.can_undo(), "error": str(exc)}
        return {"mgmt_network": self._section}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def install(node: Node, store: mgmtnet.NetworkStore | None = None, networkctl: str = "networkctl",
            helper_socket: Path = helper.SOCKET) -> None:
    """Register the management network's and the factory reset's status and commands on `node`'s daemon."""
    register_network_commands(node.daemon.endpoints, node.daemon.journal, store or mgmtnet.NetworkStore(),
                              networkctl)
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


def register_network_commands(endpoints: Endpoints, journal: Journal, store: mgmtnet.NetworkStore,
                              networkctl: str = "networkctl") -> None:
    """The ``mgmt_network`` status key and the journaled ``network-undo`` command (the daemon's, `tandem setup`'s)."""
    view = ManagementNetworkView(store)
    endpoints.add_status(view.status)

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
