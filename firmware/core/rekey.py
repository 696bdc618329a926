"""Re-pairing a replaced box while this one keeps the calls: lend the serial cable, take the new key.

When the peer box is replaced, the survivor is usually ACTIVE. Stopping its daemon to free the serial
port for `tandem pair` would drop the calls, so the daemon lends the port instead and takes the key
the pairing wrote without a restart:

* ``serial.lend {seconds}``: every serial link lets go of its port for at most `seconds` (the other
  links carry the heartbeats meanwhile); ``serial.return`` takes them back at once;
* ``keys.reload``: read the key file again and seal and open heartbeats with it from now on (the
  nonce counter goes on, so nothing is replayed); components that derive from the keys (the bulk
  channel) are told through `Rekeying.listeners`.

`tandem pair` on a box whose daemon answers does all three. All are journaled before they run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from firmware.core.control import ControlError
from firmware.core.endpoints import Endpoints, SourceParams
from firmware.core.heartbeat import HeartbeatEndpoint
from firmware.core.journal import Journal
from firmware.core.links import Link, SerialLink
from firmware.core.protocol import Keyring

log = logging.getLogger(__name__)

MAX_LEND_S = 900.0


class LendParams(SourceParams):
    """``serial.lend``: how long the serial ports may stay lent (then they are taken back anyway)."""

    seconds: Annotated[float, Field(gt=0, le=MAX_LEND_S)] = 330.0


class Rekeying:
    """The ``serial.lend``, ``serial.return`` and ``keys.reload`` commands of one daemon."""

    def __init__(self, links: dict[str, Link], endpoint: HeartbeatEndpoint, key_file: Path, journal: Journal,
                 clock: Callable[[], float]) -> None:
        self.links = links
        self.endpoint = endpoint
        self.key_file = key_file
        self.journal = journal
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []
        """Called after the keys were reloaded (on the event loop; keep them short)."""

    def register(self, endpoints: Endpoints) -> None:
        """Add the three commands."""
        endpoints.add_command("serial.lend", self.lend, LendParams, journaled=True)
        endpoints.add_command("serial.return", self.take_back, SourceParams, journaled=True)
        endpoints.add_command("keys.reload", self.reload, SourceParams, journaled=True)

    def _serial_links(self) -> list[SerialLink]:
        links = [link for link in self.links.values() if isinstance(link, SerialLink)]
        if not links:
            raise ControlError("this node has no serial link to lend")
        return links

    def lend(self, request: dict[str, Any]) -> dict[str, Any]:
        """Let go of every serial port for `seconds`."""
        links = self._serial_links()
        for link in links:
            link.lend(self.clock() + request["seconds"])
        self.journal.record("serial.lent", {"ports": [link.port for link in links], "seconds": request["seconds"],
                                            "source": request["source"]})
        return {"lent": [link.port for link in links], "seconds": request["seconds"]}

    def take_back(self, request: dict[str, Any]) -> dict[str, Any]:
        """Reopen every serial port now."""
        links = self._serial_links()
        for link in links:
            link.lend(0.0)
        self.journal.record("serial.returned", {"ports": [link.port for link in links], "source": request["source"]})
        return {"returned": [link.port for link in links]}

    def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        """Read the key file again; seal and open with its keys from now on."""
        try:
            keyring = Keyring.load(self.key_file)
        except (OSError, ValueError) as exc:
            raise ControlError(f"keys.reload: {self.key_file}: {exc}; the keys in use are kept") from None
        self.endpoint.rekey(keyring)
        fingerprint = hashlib.sha256(b"".join(keyring.secrets())).hexdigest()[:16]
        self.journal.record("keys.reloaded", {"key_ids": keyring.key_ids, "fingerprint": fingerprint,
                                              "source": request["source"]})
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - the heartbeats have the new key whatever a listener does
                log.exception("keys.reload: a listener failed")
        return {"key_ids": keyring.key_ids, "fingerprint": fingerprint}
