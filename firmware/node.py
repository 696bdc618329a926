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
* the update's good gate (`firmware.update.gate`): its ``update`` status section and alarm;
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
from firmware.core.daemon import Daemon
from firmware.core.endpoints import LocalClient
from firmware.core.guardian import Guardian
from firmware.drivers import load_driver
from firmware.panel.runner import PanelRunner
from firmware.pairing.bulk import BulkError, BulkServer, load_credentials
from firmware.panel.setup import open_panel, register_panel_commands
from firmware.update.gate import GoodGate

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
        gate = GoodGate(config.node.update, daemon.settings, lambda: (daemon.state, daemon.health),
                        daemon.journal.record, daemon.now)
        daemon.add_component(gate)
        daemon.endpoints.add_status(gate.status)
        daemon.alarm_board.add_source(gate.alarms)
        node = Node(config, daemon, panel)
        for index, spec in enumerate(config.board.extensions):
            load_driver(spec, f"extensions[{index}]", config.board_path, node)
    except BaseException:
        daemon.release_hardware()
        raise
    return node


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
