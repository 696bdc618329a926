"""The composition root: one node as the board profile and node config describe it.

The daemon (:mod:`firmware.core.daemon`) knows nothing of front panels or
simulators. This module builds it, then wires in what the board has:

* the release guardian `tandem run` forked (`firmware.core.guardian`): its
  status and its alarm;
* the front panel, talking to its own daemon in-process through
  :class:`~firmware.core.endpoints.LocalClient` (not through the Unix
  socket), with its ``panel.frame`` and ``panel.report`` commands;
* the bulk channel to the peer (`firmware.pairing.bulk`) when the config has ``[bulk]``:
  its server, on a thread of its own, and its ``bulk`` status section;
* updates (`firmware.update`): the good gate, this box's install job and the rolling update of
  the pair, with the board's slots driver; their ``update-*`` commands, ``update`` status section
  and alarms;
* the board profile's ``extensions``: callables named by import path
  (``"sim.extension:install"``) that receive the :class:`Node` and may register
  control commands, status keys or health adjusters. The simulator plugs its
  fault injection in this way, so the firmware has no simulator branches.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from firmware.appliance.bootreason import last_boot
from firmware.config import Config
from firmware.core.control import ControlError
from firmware.core.daemon import Daemon
from firmware.core.endpoints import LocalClient, SourceParams
from firmware.core.guardian import Guardian
from firmware.core.states import NodeState
from firmware.drivers import load_driver
from firmware.panel.runner import PanelRunner
from firmware.pairing.bulk import BulkClient, BulkError, BulkServer, load_credentials
from firmware.panel.setup import open_panel, register_panel_commands
from firmware.update.gate import GoodGate
from firmware.update.install import InstallParams, LocalInstall
from firmware.update.rolling import RollingUpdate, StartParams

log = logging.getLogger(__name__)


@dataclass
class Node:
    """A composed node: its configuration, its daemon and its front panel (if any)."""

    config: Config
    daemon: Daemon
    panel: PanelRunner | None


def build_node(config: Config, guardian: Guardian | None = None) -> Node:
    """The daemon with the board's panel and extensions wired in (nothing started yet).

    ``guardian``: the release guardian `tandem run` forked; its status and alarm join the daemon's.
    """
    daemon = Daemon(config)
    try:
        booted = last_boot(config.node.state_dir)  # judged once at boot, before the daemon started
        daemon.endpoints.add_status(lambda: {"last_boot": booted})
        if guardian is not None:
            daemon.endpoints.add_status(guardian.status)
            daemon.alarm_board.add_source(guardian.alarms)
        panel = open_panel(config, LocalClient(daemon.endpoints, lambda: daemon.loop))
        if panel is not None:
            daemon.add_component(panel)
            daemon.journal.add_listener(lambda record: panel.notify())
        register_panel_commands(daemon.endpoints, panel, daemon.journal)
        _add_bulk_channel(config, daemon)
        _add_updates(config, daemon)
        node = Node(config, daemon, panel)
        for index, spec in enumerate(config.board.extensions):
            load_driver(spec, f"extensions[{index}]", config.board_path, node)
    except BaseException:
        daemon.release_hardware()
        raise
    return node


def _add_updates(config: Config, daemon: Daemon) -> None:
    """The good gate, the install job and the rolling update, their commands, status and alarms."""
    node = config.node
    slots = load_driver(config.board.slots.driver, "slots.driver", config.board_path, node.update,
                        **config.board.slots.kwargs)
    gate = GoodGate(node.update, daemon.settings, lambda: (daemon.state, daemon.health), daemon.journal.record,
                    daemon.now)

    async def command(name: str) -> Any:
        return await daemon.endpoints.handle({"cmd": name, "source": "update"})

    def peer_state() -> NodeState | None:
        message = daemon.peer_message()
        return None if message is None else message.state

    install = LocalInstall(slots, node.bulk.inbox if node.bulk else None, lambda: daemon.state,
                           daemon.journal.record, lambda: command("reboot"))
    rolling = RollingUpdate(node.state_dir, slots, install, lambda: _peer_channel(config), lambda: daemon.state,
                            peer_state, command, lambda: gate.status()["update"], daemon.journal.record, node.peer)

    async def install_here(request: dict[str, Any]) -> dict[str, Any]:
        if rolling.running:
            raise ControlError("this box is running the pair's rolling update: it installs its own slot last")
        return await install.begin(request)

    async def abort(request: dict[str, Any]) -> str:
        if rolling.running:
            return await rolling.abort()
        return await install.abort()

    # The calls move only in the update's own handovers, and never back to a slot that is not proven.
    daemon.failback_holds.append(lambda: rolling.running or install.running or bool(gate.trial and not gate.passed))
    for component in (gate, install, rolling):
        daemon.add_component(component)
        daemon.alarm_board.add_source(component.alarms)
    daemon.endpoints.add_status(lambda: {"update": {**gate.status()["update"], "install": install.status(),
                                                    "rolling": rolling.status()}})
    daemon.endpoints.add_command("update-start", rolling.begin, StartParams, journaled=True)
    daemon.endpoints.add_command("update-install", install_here, InstallParams, journaled=True)
    daemon.endpoints.add_command("update-abort", abort, SourceParams, journaled=True)


def _peer_channel(config: Config) -> BulkClient:
    """A client of the peer's bulk channel (credentials read anew: keys may have been rotated)."""
    bulk = config.node.bulk
    if bulk is None:
        raise BulkError(f"{config.path} has no [bulk] channel to the peer, which a rolling update needs "
                        "(`tandem pair` writes one when both boxes give --address)")
    credentials = load_credentials(bulk.identity, config.node.key_file, bulk.peer_identity, bulk.record)
    return BulkClient(credentials, *bulk.peer_address)


def _add_bulk_channel(config: Config, daemon: Daemon) -> None:
    """Serve the bulk channel if ``[bulk]`` says so; its credentials are read again after ``keys.reload``."""
    if config.node.bulk is None:
        return
    service = BulkService(config, LocalClient(daemon.endpoints, lambda: daemon.loop))
    daemon.add_component(service)
    daemon.endpoints.add_status(service.status)
    daemon.rekeying.listeners.append(service.reload)


class BulkService:
    """The bulk channel's server as a daemon component: started, closed, and restarted on new keys.

    A box whose keys or pairing record are unusable runs without it and says why in its status.
    """

    def __init__(self, config: Config, client: LocalClient) -> None:
        self.config = config
        self.client = client
        self.server: BulkServer | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Load the credentials and serve (on the server's own thread)."""
        bulk, node = self.config.node.bulk, self.config.node
        assert bulk is not None
        try:
            credentials = load_credentials(bulk.identity, node.key_file, bulk.peer_identity, bulk.record)
        except BulkError as exc:
            log.error("bulk: the channel to the peer is off: %s", exc)
            self.error = str(exc)
            return
        host, port = bulk.listen_address
        self.error = None
        self.server = BulkServer(credentials, host, port, bulk.inbox,
                                 status=lambda: self.client.request({"cmd": "status"}, 10.0),
                                 commands=lambda request: self.client.request(request, 30.0),
                                 max_bytes=bulk.max_mib * 2**20).start()

    def reload(self) -> None:
        """New keys or a new peer (a re-pairing): serve with the credentials as the files now say."""
        old, self.server = self.server, None
        if old is not None:
            threading.Thread(target=old.close, name="tandem-bulk-close", daemon=True).start()
        self.start()

    def close(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.close()

    def status(self) -> dict[str, Any]:
        """The ``bulk`` status section."""
        if self.server is None:
            return {"bulk": {"listening": False, "error": self.error}}
        return self.server.status()
